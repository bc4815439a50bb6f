//! Gzip-compressed newline-delimited JSON: one record per line, the format of `raw/` and `failed/`.

use std::io::{BufRead, BufReader, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Encodes records as gzip NDJSON. Level 1: the collector's CPU budget matters more than a few percent of
/// storage, and the lake compaction re-encodes everything anyway.
pub fn encode_ndjson_gz<T: Serialize>(records: &[T]) -> Vec<u8> {
    // Serialize first, compress once: the serializer's many small writes would each be a deflate call.
    let mut ndjson = Vec::with_capacity(records.len() * 700);
    for record in records {
        // Writing to a Vec cannot fail, and our records always serialize (string keys, finite numbers).
        let _ = serde_json::to_writer(&mut ndjson, record);
        ndjson.push(b'\n');
    }
    gzip(&ndjson)
}

/// Gzip (level 1) of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::fast());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// The bytes inside a gzip stream.
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    std::io::Read::read_to_end(&mut GzDecoder::new(bytes), &mut out)
        .map_err(|e| Error::Decode(format!("gzip: {e}")))?;
    Ok(out)
}

/// Decodes gzip NDJSON, skipping blank lines.
pub fn decode_ndjson_gz<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<T>, Error> {
    let reader = BufReader::new(GzDecoder::new(bytes));
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::Decode(format!("gzip: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| Error::Decode(format!("line {}: {e}", n + 1)))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn round_trips() {
        let records = vec![json!({"a": 1}), json!({"b": "line\nbreak"})];
        let bytes = encode_ndjson_gz(&records);
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
        assert_eq!(decode_ndjson_gz::<Value>(&bytes).unwrap(), records);
    }

    #[test]
    fn corrupt_input_is_an_error() {
        assert!(decode_ndjson_gz::<Value>(b"not gzip").is_err());
        let bytes = encode_ndjson_gz(&[json!(1)]);
        assert!(decode_ndjson_gz::<String>(&bytes).unwrap_err().to_string().contains("line 1"));
    }
}
