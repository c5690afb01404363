//! Identities: an Ed25519 key pair plus a certificate chain naming it (`alice`,
//! `alice:laptop`), each link signed by its parent's key, in the spirit of Vanadium blessings;
//! and the set of root keys an identity trusts. `sb` and `syncbased` share the on-disk format.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// The newest identity file format this build reads and writes.
pub const IDENTITY_FORMAT_VERSION: u32 = 1;
/// The most links a certificate chain may have.
pub const CHAIN_LINKS_MAX: usize = 16;
/// The longest name extension (one link's part of the name), in bytes.
pub(crate) const EXTENSION_BYTES_MAX: usize = 256;

const IDENTITY_FILE: &str = "identity";
const CERTIFICATE_DOMAIN: &[u8] = b"syncbase certificate v1\0";

/// One link of a chain: a name extension and a public key, signed by the previous link's key
/// (the first link, the root, signs itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// This link's part of the name (`laptop` in `alice:laptop`).
    pub extension: String,
    /// The Ed25519 public key this link names.
    pub public_key: [u8; 32],
    /// The signature of the parent (or of the root itself) over the name so far and the key.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

mod signature_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &[u8; 64],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; 64], D::Error> {
        let bytes = <Vec<u8>>::deserialize(deserializer)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a signature is 64 bytes"))
    }
}

/// A root key this identity trusts, with the name its owner gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedRoot {
    /// The root's name (informative: trust is in the key).
    pub name: String,
    /// The root's Ed25519 public key.
    pub public_key: [u8; 32],
}

impl TrustedRoot {
    /// The one-line text form `export-root` writes: `syncbase-root NAME HEXKEY`.
    pub fn to_line(&self) -> String {
        format!("syncbase-root {} {}\n", self.name, hex(&self.public_key))
    }

    /// Parses [`TrustedRoot::to_line`]'s form.
    pub fn from_line(text: &str) -> Result<Self> {
        let bad = || NetError::Identity(format!("not a root file: {:?}", text.trim()));
        let mut words = text.split_whitespace();
        if words.next() != Some("syncbase-root") {
            return Err(bad());
        }
        let name = words.next().ok_or_else(bad)?.to_string();
        let key = unhex(words.next().ok_or_else(bad)?).ok_or_else(bad)?;
        let public_key: [u8; 32] = key.try_into().map_err(|_| bad())?;
        VerifyingKey::from_bytes(&public_key).map_err(|_| bad())?;
        validate_extension(&name)?;
        Ok(Self { name, public_key })
    }
}

/// A verified certificate chain: its full name and the key it certifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// The full name (`alice:laptop`).
    pub name: String,
    /// The key of the last link.
    pub public_key: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    format: u32,
    secret_key: [u8; 32],
    chain: Vec<Certificate>,
    trusted_roots: Vec<TrustedRoot>,
}

/// An identity: a key pair, the chain naming it, and the roots it trusts.
pub struct Identity {
    key: SigningKey,
    chain: Vec<Certificate>,
    trusted_roots: Vec<TrustedRoot>,
}

#[allow(clippy::disallowed_methods)] // a new identity's key comes from the operating system's randomness.
fn random_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|error| NetError::Identity(format!("no randomness for a key: {error}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Checks a root name or extension met in a chain or a root file: the rules it may have been
/// created under, so identities and root files made before [`validate_new_extension`]'s
/// stricter rules keep working.
fn validate_extension(extension: &str) -> Result<()> {
    if extension.is_empty()
        || extension.len() > EXTENSION_BYTES_MAX
        || extension
            .chars()
            .any(|c| c == ':' || c == '$' || c.is_whitespace() || c.is_control())
    {
        return Err(NetError::Identity(format!(
            "invalid name {extension:?}: use letters, digits and punctuation other than ':' and '$'"
        )));
    }
    Ok(())
}

/// Checks a root name or extension being created: [`validate_extension`], plus the rules that
/// names of apps, databases and collections share (no bidirectional controls, not `.` or
/// `..`).
pub(crate) fn validate_new_extension(extension: &str) -> Result<()> {
    validate_extension(extension)?;
    match syncbase_wire::new_name_problem(extension) {
        Some(why) => Err(NetError::Identity(format!("invalid name: {why}"))),
        None => Ok(()),
    }
}

fn certificate_message(name_so_far: &str, public_key: &[u8; 32]) -> Vec<u8> {
    let mut message = CERTIFICATE_DOMAIN.to_vec();
    message.extend_from_slice(&(name_so_far.len() as u32).to_be_bytes());
    message.extend_from_slice(name_so_far.as_bytes());
    message.extend_from_slice(public_key);
    message
}

fn sign_link(signer: &SigningKey, name_so_far: &str, public_key: &[u8; 32]) -> [u8; 64] {
    signer
        .sign(&certificate_message(name_so_far, public_key))
        .to_bytes()
}

/// Verifies the signature of a public Ed25519 key over a message.
pub fn verify_signature(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<()> {
    let key = VerifyingKey::from_bytes(public_key)
        .map_err(|_| NetError::Authentication("a public key is malformed".into()))?;
    key.verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| NetError::Authentication("a signature does not verify".into()))
}

/// Checks every link of `chain` and that its root key is one of `trusted`.
pub fn verify_chain(chain: &[Certificate], trusted: &[TrustedRoot]) -> Result<VerifiedChain> {
    let refuse = |why: String| NetError::Authentication(why);
    if chain.is_empty() || chain.len() > CHAIN_LINKS_MAX {
        return Err(refuse(format!("a chain has {} links", chain.len())));
    }
    let mut name = String::new();
    let mut signer = chain[0].public_key;
    for certificate in chain {
        validate_extension(&certificate.extension).map_err(|e| refuse(e.to_string()))?;
        if !name.is_empty() {
            name.push(':');
        }
        name.push_str(&certificate.extension);
        verify_signature(
            &signer,
            &certificate_message(&name, &certificate.public_key),
            &certificate.signature,
        )
        .map_err(|_| refuse(format!("the certificate of {name:?} does not verify")))?;
        signer = certificate.public_key;
    }
    // Trust is in the key, and the key's owner may only use the name it was trusted under:
    // otherwise any trusted root could sign itself a chain named like someone else.
    if !trusted
        .iter()
        .any(|root| root.public_key == chain[0].public_key && root.name == chain[0].extension)
    {
        // A root named like a trusted one but with another key is a different principal.
        return Err(NetError::UntrustedRoot {
            chain: name,
            root: chain[0].extension.clone(),
            key: key_hex(&chain[0].public_key),
            hint: String::new(),
        });
    }
    Ok(VerifiedChain {
        name,
        public_key: signer,
    })
}

impl Identity {
    /// A new root identity named `name`, trusting itself.
    pub fn new_root(name: &str) -> Result<Self> {
        validate_new_extension(name)?;
        let key = random_key()?;
        let public_key = key.verifying_key().to_bytes();
        let root = Certificate {
            extension: name.to_string(),
            public_key,
            signature: sign_link(&key, name, &public_key),
        };
        Ok(Self {
            key,
            chain: vec![root],
            trusted_roots: vec![TrustedRoot {
                name: name.to_string(),
                public_key,
            }],
        })
    }

    /// A new identity with a fresh key, named `<this name>:extension`, certified by this one
    /// and trusting the same roots.
    pub fn bless(&self, extension: &str) -> Result<Self> {
        validate_new_extension(extension)?;
        if self.chain.len() >= CHAIN_LINKS_MAX {
            return Err(NetError::Identity("the chain is as long as allowed".into()));
        }
        let key = random_key()?;
        let public_key = key.verifying_key().to_bytes();
        let name = format!("{}:{extension}", self.name());
        let mut chain = self.chain.clone();
        chain.push(Certificate {
            extension: extension.to_string(),
            public_key,
            signature: sign_link(&self.key, &name, &public_key),
        });
        Ok(Self {
            key,
            chain,
            trusted_roots: self.trusted_roots.clone(),
        })
    }

    /// A root identity with this identity's key but another name, self-signed: what a trusted
    /// root's owner could forge. For tests of the name check.
    #[cfg(feature = "testing")]
    pub fn forge_root_named(&self, name: &str) -> Identity {
        let public_key = self.public_key();
        Identity {
            key: self.key.clone(),
            chain: vec![Certificate {
                extension: name.to_string(),
                public_key,
                signature: sign_link(&self.key, name, &public_key),
            }],
            trusted_roots: self.trusted_roots.clone(),
        }
    }

    /// The full name (`alice:laptop`).
    pub fn name(&self) -> String {
        self.chain
            .iter()
            .map(|link| link.extension.as_str())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The root's name (`alice`).
    pub fn root_name(&self) -> &str {
        &self.chain[0].extension
    }

    /// The root this identity's chain starts at.
    pub fn root(&self) -> TrustedRoot {
        TrustedRoot {
            name: self.chain[0].extension.clone(),
            public_key: self.chain[0].public_key,
        }
    }

    /// The certificate chain.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// The roots this identity trusts.
    pub fn trusted_roots(&self) -> &[TrustedRoot] {
        &self.trusted_roots
    }

    /// Adds a trusted root (no-op when it is already trusted). Refuses a root whose name is
    /// already trusted with another key, or whose key is already trusted under another name.
    pub fn trust(&mut self, root: TrustedRoot) -> Result<()> {
        for known in &self.trusted_roots {
            let same_key = known.public_key == root.public_key;
            let same_name = known.name == root.name;
            if same_key && same_name {
                return Ok(());
            }
            if same_name {
                return Err(NetError::Identity(format!(
                    "cannot trust root {:?}: that name is already trusted with another key",
                    root.name
                )));
            }
            if same_key {
                return Err(NetError::Identity(format!(
                    "cannot trust root {:?}: its key is already trusted as {:?}",
                    root.name, known.name
                )));
            }
        }
        self.trusted_roots.push(root);
        Ok(())
    }

    /// Stops trusting every root named `name`; returns how many were removed. Refuses this
    /// identity's own root (it could no longer load itself) and a name no trusted root has.
    pub fn untrust(&mut self, name: &str) -> Result<usize> {
        if name == self.root_name() {
            return Err(NetError::Identity(format!(
                "cannot untrust {name:?}: it is this identity's own root"
            )));
        }
        let before = self.trusted_roots.len();
        self.trusted_roots.retain(|root| root.name != name);
        let removed = before - self.trusted_roots.len();
        if removed == 0 {
            return Err(NetError::Identity(format!(
                "no trusted root is named {name:?}"
            )));
        }
        Ok(removed)
    }

    /// This identity's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs `message` with this identity's key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Whether an identity is stored in `dir`.
    pub fn exists(dir: &Path) -> bool {
        dir.join(IDENTITY_FILE).is_file()
    }

    /// The file in `dir` that holds an identity.
    pub fn file_in(dir: &Path) -> std::path::PathBuf {
        dir.join(IDENTITY_FILE)
    }

    /// Loads the identity stored in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(IDENTITY_FILE);
        let bytes = std::fs::read(&path).map_err(|error| {
            NetError::Identity(format!("cannot read {}: {error}", path.display()))
        })?;
        let file: IdentityFile = postcard::from_bytes(&bytes).map_err(|error| {
            NetError::Identity(format!("{} is not an identity: {error}", path.display()))
        })?;
        if file.format > IDENTITY_FORMAT_VERSION {
            return Err(NetError::Identity(format!(
                "{} has format {}, newer than this build reads ({IDENTITY_FORMAT_VERSION}); upgrade syncbase",
                path.display(),
                file.format
            )));
        }
        let identity = Self {
            key: SigningKey::from_bytes(&file.secret_key),
            chain: file.chain,
            trusted_roots: file.trusted_roots,
        };
        let own_root = [identity.root()];
        let verified = verify_chain(&identity.chain, &own_root)
            .map_err(|error| NetError::Identity(format!("{}: {error}", path.display())))?;
        if verified.public_key != identity.public_key() {
            return Err(NetError::Identity(format!(
                "{}: the chain does not name this key",
                path.display()
            )));
        }
        Ok(identity)
    }

    /// Stores the identity in `dir` (created with owner-only permissions), atomically: a reader
    /// sees the old file or the new one.
    pub fn save(&self, dir: &Path) -> Result<()> {
        create_private_dir(dir)?;
        write_private_atomically(&dir.join(IDENTITY_FILE), &self.encode()?)
    }

    fn encode(&self) -> Result<Vec<u8>> {
        let file = IdentityFile {
            format: IDENTITY_FORMAT_VERSION,
            secret_key: self.key.to_bytes(),
            chain: self.chain.clone(),
            trusted_roots: self.trusted_roots.clone(),
        };
        postcard::to_stdvec(&file)
            .map_err(|error| NetError::Identity(format!("cannot encode identity: {error}")))
    }

    /// Stores a new identity in `dir` only if none is there (whoever of `sb` and `syncbased`
    /// comes first creates it; the other loads it). Refuses to overwrite.
    pub fn create_new(&self, dir: &Path) -> Result<bool> {
        create_private_dir(dir)?;
        let temporary = dir.join(format!("{IDENTITY_FILE}.new.{}", std::process::id()));
        write_private(&temporary, &self.encode()?)?;
        // A hard link fails when the target exists: exactly one creator wins.
        let created = match std::fs::hard_link(&temporary, dir.join(IDENTITY_FILE)) {
            Ok(()) => true,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(error) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(NetError::Identity(format!(
                    "cannot store identity: {error}"
                )));
            }
        };
        let _ = std::fs::remove_file(&temporary);
        // Make the new name durable too, not only the file's contents.
        if let Ok(directory) = std::fs::File::open(dir) {
            let _ = directory.sync_all();
        }
        Ok(created)
    }

    /// Loads the identity in `dir`, creating a root named `default_name` there first if there
    /// is none.
    pub fn load_or_create(dir: &Path, default_name: &str) -> Result<Self> {
        Ok(Self::load_or_create_reporting(dir, default_name)?.0)
    }

    /// [`Identity::load_or_create`], also saying whether this call created the identity.
    pub fn load_or_create_reporting(dir: &Path, default_name: &str) -> Result<(Self, bool)> {
        let mut created = false;
        if !Self::exists(dir) {
            created = Self::new_root(default_name)?.create_new(dir)?;
        }
        Ok((Self::load(dir)?, created))
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|error| NetError::Identity(format!("cannot create {}: {error}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |error: std::io::Error| {
        NetError::Identity(format!("cannot write {}: {error}", path.display()))
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

fn write_private_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary: PathBuf = path.with_extension(format!("tmp.{}", std::process::id()));
    write_private(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
        .map_err(|error| NetError::Identity(format!("cannot write {}: {error}", path.display())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

/// Hex of a public key, as `sb identity show` prints it.
pub fn key_hex(public_key: &[u8; 32]) -> String {
    hex(public_key)
}
