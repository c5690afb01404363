//! Typed access to the store with postcard, and the `Layer` trait (mirrors Go
//! `server/util/store_util.go` and `util.Layer`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use syncbase_store::{StoreReader, StoreWriter};

use crate::error::{Error, Result};

/// A layer of the service (service, database, collection, sync) that keeps its own metadata
/// record in the store.
pub trait Layer {
    /// The layer's name, for people and logs.
    fn name(&self) -> &str;

    /// The storage key of the layer's metadata record.
    fn st_key(&self) -> Vec<u8>;
}

/// Reads and decodes the value at `key`.
pub fn get_typed<T: DeserializeOwned, R: StoreReader + ?Sized>(
    reader: &R,
    key: &[u8],
) -> Result<Option<T>> {
    let Some(bytes) = reader.get(key)? else {
        return Ok(None);
    };
    decode_typed(key, &bytes).map(Some)
}

/// Decodes `bytes`, the value stored at `key` (named in the error).
pub fn decode_typed<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|error| Error::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        message: error.to_string(),
    })
}

/// Encodes and writes `value` at `key`.
pub fn put_typed<T: Serialize + ?Sized, W: StoreWriter + ?Sized>(
    writer: &W,
    key: &[u8],
    value: &T,
) -> Result<()> {
    put_typed_owned(writer, key.to_vec(), value)
}

/// [`put_typed`] with a key the caller gives up.
pub fn put_typed_owned<T: Serialize + ?Sized, W: StoreWriter + ?Sized>(
    writer: &W,
    key: Vec<u8>,
    value: &T,
) -> Result<()> {
    let bytes = postcard::to_stdvec(value).map_err(|error| Error::Encode(error.to_string()))?;
    Ok(writer.put_owned(key, bytes)?)
}

/// Deletes `key`.
pub fn delete<W: StoreWriter + ?Sized>(writer: &W, key: &[u8]) -> Result<()> {
    Ok(writer.delete(key)?)
}

/// Reads a layer's metadata record.
pub fn get_layer_data<T: DeserializeOwned, R: StoreReader + ?Sized>(
    reader: &R,
    layer: &dyn Layer,
) -> Result<Option<T>> {
    get_typed(reader, &layer.st_key())
}

/// Writes a layer's metadata record.
pub fn put_layer_data<T: Serialize + ?Sized, W: StoreWriter + ?Sized>(
    writer: &W,
    layer: &dyn Layer,
    value: &T,
) -> Result<()> {
    put_typed(writer, &layer.st_key(), value)
}
