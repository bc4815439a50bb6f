//! Request bodies sent compressed (`Content-Encoding`): gzip and deflate are decoded, with the size limit
//! applied while inflating (a small body that inflates to gigabytes stops at the limit); any other encoding is
//! refused with 415 rather than read as JSON it is not.

use std::io::Read as _;

use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};

use super::Answer;

/// What a `Content-Encoding` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
}

fn coding(header: &str) -> Result<Coding, Answer> {
    // One coding; `identity` around it (or alone) changes nothing.
    let mut found = Coding::Identity;
    for part in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let this = match part.to_ascii_lowercase().as_str() {
            "identity" => continue,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            other => {
                return Err(Answer::error(
                    415,
                    "unsupported_encoding",
                    &format!("Content-Encoding {other:?} is not supported; send gzip, deflate or no encoding"),
                ));
            }
        };
        if found != Coding::Identity {
            return Err(Answer::error(
                415,
                "unsupported_encoding",
                "one Content-Encoding at most (gzip or deflate) is supported",
            ));
        }
        found = this;
    }
    Ok(found)
}

/// The body as the pipeline reads it: `None` when it was sent as is, else the decoded bytes. At most `limit`
/// bytes are inflated: a body that inflates to more is refused with the same 400 as a body that large.
pub(super) fn decode(body: &[u8], content_encoding: Option<&str>, limit: usize) -> Result<Option<Vec<u8>>, Answer> {
    let coding = match content_encoding {
        None => return Ok(None),
        Some(header) => coding(header)?,
    };
    let name = match coding {
        Coding::Identity => return Ok(None),
        Coding::Gzip => "gzip",
        Coding::Deflate => "deflate",
    };
    let read = |reader: &mut dyn std::io::Read| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1));
        reader.take(limit as u64 + 1).read_to_end(&mut out)?;
        Ok(out)
    };
    let decoded = match coding {
        Coding::Gzip => read(&mut GzDecoder::new(body)),
        // HTTP's "deflate" is the zlib format; some clients send raw deflate, which is tried next.
        _ => read(&mut ZlibDecoder::new(body)).or_else(|_| read(&mut DeflateDecoder::new(body))),
    };
    match decoded {
        Ok(bytes) if bytes.len() > limit => Err(Answer::error(
            400,
            "request_too_large",
            &format!("the {name} body inflates to more than {limit} bytes, the most allowed on this endpoint"),
        )),
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) => Err(Answer::error(
            400,
            "invalid_encoding",
            &format!("the body is not valid {name} (Content-Encoding): {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_and_deflate_are_decoded_and_other_codings_refused() {
        let json = br#"{"batch":[]}"#;
        assert_eq!(decode(json, None, 100), Ok(None));
        assert_eq!(decode(json, Some("identity"), 100), Ok(None));
        assert_eq!(decode(&gzip(json), Some("gzip"), 100), Ok(Some(json.to_vec())));
        assert_eq!(decode(&gzip(json), Some("X-Gzip"), 100), Ok(Some(json.to_vec())));
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(json).unwrap();
        assert_eq!(decode(&zlib.finish().unwrap(), Some("deflate"), 100), Ok(Some(json.to_vec())));
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(json).unwrap();
        assert_eq!(decode(&raw.finish().unwrap(), Some("deflate"), 100), Ok(Some(json.to_vec())));
        for refused in ["br", "zstd", "gzip, br", "gzip, gzip"] {
            assert_eq!(decode(json, Some(refused), 100).unwrap_err().status, 415, "{refused}");
        }
        let broken = decode(json, Some("gzip"), 100).unwrap_err();
        assert_eq!(broken.status, 400);
        assert!(broken.body.contains("invalid_encoding"), "{}", broken.body);
    }

    #[test]
    fn a_body_inflating_past_the_limit_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 << 20]); // 50 MB of spaces, about 50 KB compressed
        assert!(bomb.len() < 100 << 10);
        let refused = decode(&bomb, Some("gzip"), 500 << 10).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(refused.body.contains("inflates to more than"), "{}", refused.body);
    }
}
