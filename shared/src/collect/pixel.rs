//! Segment's pixel API, for places that cannot run script or send a POST (emails, some webviews):
//! `GET /v1/pixel/{track,page,identify}?data=<base64 of the event's JSON, writeKey inside>`, answered with a
//! 1×1 transparent GIF. The decoded JSON is the body of the matching single-event endpoint and goes through
//! the same pipeline.

use base64::Engine as _;

use crate::error::Invalid;

/// A 1×1 transparent GIF (43 bytes).
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Longest `data` parameter accepted (characters), about the request limit's worth of base64 at most URLs'
/// length limits.
pub const MAX_DATA_CHARS: usize = 16 * 1024;

/// The event body in a pixel request's query string: the `data` parameter, percent-decoded, then base64
/// (standard or URL-safe alphabet, padded or not).
pub fn body_of(query: Option<&str>) -> Result<Vec<u8>, Invalid> {
    let Some(query) = query else { return Err(Invalid::from("a pixel request carries the event in `?data=`")) };
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("data="))
        .ok_or_else(|| Invalid::from("a pixel request carries the event in `?data=`"))?;
    if raw.len() > MAX_DATA_CHARS {
        return Err(Invalid(format!("`data` is longer than {MAX_DATA_CHARS} characters")));
    }
    let text = percent_decode(raw).ok_or_else(|| Invalid::from("`data` is not percent-encoded text"))?;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let unpadded = compact.trim_end_matches('=');
    let engines = [base64::engine::general_purpose::STANDARD_NO_PAD, base64::engine::general_purpose::URL_SAFE_NO_PAD];
    engines.iter().find_map(|engine| engine.decode(unpadded).ok()).ok_or_else(|| Invalid::from("`data` is not base64"))
}

/// `%XX` escapes and `+` (a space) undone; `None` when an escape is broken or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            // In base64 a `+` sent unescaped stays a `+` (it is no space there).
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_data_parameter() {
        let json = br#"{"writeKey":"wk","event":"Email Opened","userId":"u1","properties":{"campaign":"nov"}}"#;
        let standard = base64::engine::general_purpose::STANDARD.encode(json);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        assert_eq!(body_of(Some(&format!("data={standard}"))).unwrap(), json);
        assert_eq!(body_of(Some(&format!("x=1&data={url_safe}"))).unwrap(), json);
        let escaped = standard.replace('=', "%3D").replace('+', "%2B").replace('/', "%2F");
        assert_eq!(body_of(Some(&format!("data={escaped}&cb=123"))).unwrap(), json);
    }

    #[test]
    fn refuses_what_is_not_an_event() {
        assert!(body_of(None).unwrap_err().0.contains("?data="));
        assert!(body_of(Some("cb=1")).unwrap_err().0.contains("?data="));
        assert_eq!(body_of(Some("data=%%%")).unwrap_err().0, "`data` is not percent-encoded text");
        assert_eq!(body_of(Some("data=***")).unwrap_err().0, "`data` is not base64");
        assert!(body_of(Some(&format!("data={}", "A".repeat(MAX_DATA_CHARS + 1)))).is_err());
    }

    #[test]
    fn the_gif_is_one_transparent_pixel() {
        assert_eq!(&GIF[..6], b"GIF89a");
        assert_eq!((GIF[6], GIF[8]), (1, 1), "1×1");
        assert_eq!(GIF.len(), 43);
        assert_eq!(GIF.last(), Some(&0x3b));
    }
}
