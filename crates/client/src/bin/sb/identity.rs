//! `sb identity`: create, bless, show, export and trust identities (no daemon involved).

use syncbase_net::{Identity, TrustedRoot, key_hex};

use crate::args::{identity_dir, load_identity};
use crate::failure::{Failure, Outcome, local_codes};
use crate::output::Output;
use crate::{Cli, Format, IdentityCommand};

/// Runs an identity command.
pub(crate) fn identity(cli: &Cli, command: &IdentityCommand, output: &mut Output) -> Outcome {
    let dir = identity_dir(cli);
    let exists = |dir: &std::path::Path| {
        Failure::local(
            local_codes::IDENTITY_EXISTS,
            format!(
                "{} already holds an identity; not overwriting it",
                dir.display()
            ),
        )
    };
    match command {
        IdentityCommand::New { name } => {
            let identity = Identity::new_root(name).map_err(Failure::identity)?;
            if !identity.create_new(&dir).map_err(Failure::identity)? {
                return Err(exists(&dir));
            }
            output.line(identity.name().as_bytes())
        }
        IdentityCommand::Bless { extension, out } => {
            let blessed = load_identity(cli)?
                .bless(extension)
                .map_err(Failure::identity)?;
            if !blessed.create_new(out).map_err(Failure::identity)? {
                return Err(exists(out));
            }
            output.line(blessed.name().as_bytes())
        }
        IdentityCommand::Show => {
            let identity = load_identity(cli)?;
            match output.format {
                Format::Plain => {
                    output.line(format!("name\t{}", identity.name()).as_bytes())?;
                    output.line(format!("key\t{}", key_hex(&identity.public_key())).as_bytes())?;
                    for root in identity.trusted_roots() {
                        output.line(format!("trusts\t{}\t{}", root.name, key_hex(&root.public_key)).as_bytes())?;
                    }
                    Ok(())
                }
                Format::Json => output.json(serde_json::json!({
                    "name": identity.name(),
                    "key": key_hex(&identity.public_key()),
                    "trusts": identity.trusted_roots().iter()
                        .map(|root| serde_json::json!({ "name": root.name, "key": key_hex(&root.public_key) }))
                        .collect::<Vec<_>>(),
                })),
            }
        }
        IdentityCommand::ExportRoot { out } => {
            let identity = load_identity(cli)?;
            std::fs::write(out, identity.root().to_line())
                .map_err(|error| Failure::file("write", out, error))
        }
        IdentityCommand::Trust { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|error| Failure::file("read", file, error))?;
            let root = TrustedRoot::from_line(&text).map_err(Failure::identity)?;
            let mut identity = load_identity(cli)?;
            identity.trust(root).map_err(Failure::identity)?;
            identity.save(&dir).map_err(Failure::identity)
        }
        IdentityCommand::Untrust { name } => {
            let mut identity = load_identity(cli)?;
            identity.untrust(name).map_err(Failure::identity)?;
            identity.save(&dir).map_err(Failure::identity)
        }
    }
}
