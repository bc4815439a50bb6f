//! The shapes AWS delivers: S3 event notifications, directly or as SQS message bodies, and the SQS partial
//! batch response. Only the fields we read are modelled; everything else is ignored.

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
struct S3Event {
    #[serde(rename = "Records", default)]
    records: Vec<S3Record>,
}

#[derive(Debug, Deserialize)]
struct S3Record {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Debug, Deserialize)]
struct S3Entity {
    object: S3Object,
}

#[derive(Debug, Deserialize)]
struct S3Object {
    key: String,
}

#[derive(Debug, Deserialize)]
struct SqsEvent {
    #[serde(rename = "Records", default)]
    records: Vec<SqsMessage>,
}

#[derive(Debug, Deserialize)]
struct SqsMessage {
    #[serde(rename = "messageId")]
    message_id: String,
    #[serde(default)]
    body: String,
}

/// One failed SQS message: SQS redelivers only these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItemFailure {
    /// The SQS messageId.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// The response that reports partial batch failures (`ReportBatchItemFailures`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqsBatchResponse {
    /// Messages to redeliver.
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// Object keys of `ObjectCreated` records under `raw/`, URL-decoded as S3 encodes them (`+` is a space).
pub fn keys_of_s3_event(json: &serde_json::Value) -> Result<Vec<String>, shared::Invalid> {
    keys_of_s3_event_under(json, "raw/")
}

/// Object keys of `ObjectCreated` records under `prefix`, URL-decoded.
pub fn keys_of_s3_event_under(json: &serde_json::Value, prefix: &str) -> Result<Vec<String>, shared::Invalid> {
    let event: S3Event = serde_json::from_value(json.clone()).map_err(|e| format!("not an S3 event: {e}"))?;
    Ok(event
        .records
        .into_iter()
        .filter(|r| r.event_name.starts_with("ObjectCreated"))
        .map(|r| url_decode(&r.s3.object.key))
        .filter(|k| k.starts_with(prefix))
        .collect())
}

/// One SQS message's id and the keys its S3 notification names, or why its body could not be read.
pub type MessageKeys = (String, Result<Vec<String>, shared::Invalid>);

/// Per SQS message: its id and the keys its S3 notification names, or why its body could not be read.
/// S3's `s3:TestEvent` (sent when notifications are configured) yields no keys.
pub fn keys_of_sqs_event(json: &serde_json::Value) -> Result<Vec<MessageKeys>, shared::Invalid> {
    keys_of_sqs_event_under(json, "raw/")
}

/// Per SQS message: its id and the keys under `prefix` its S3 notification names.
pub fn keys_of_sqs_event_under(json: &serde_json::Value, prefix: &str) -> Result<Vec<MessageKeys>, shared::Invalid> {
    let event: SqsEvent = serde_json::from_value(json.clone()).map_err(|e| format!("not an SQS event: {e}"))?;
    Ok(event
        .records
        .into_iter()
        .map(|m| {
            let keys = serde_json::from_str::<serde_json::Value>(&m.body)
                .map_err(|e| shared::Invalid(format!("message body is not JSON: {e}")))
                .and_then(|body| {
                    if body.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
                        Ok(Vec::new())
                    } else {
                        keys_of_s3_event_under(&body, prefix)
                    }
                });
            (m.message_id, keys)
        })
        .collect())
}

/// S3 notification keys are form-encoded: `+` is a space, `%XX` a byte.
fn url_decode(key: &str) -> String {
    percent_encoding::percent_decode_str(&key.replace('+', " ")).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQS: &str = include_str!("../../tests/fixtures/aws-sqs-s3-notification.json");

    #[test]
    fn reads_keys_from_sqs_wrapped_s3_notifications() {
        let json: serde_json::Value = serde_json::from_str(SQS).unwrap();
        let messages = keys_of_sqs_event(&json).unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].0, "059f36b4-87a3-44ab-83d2-661975830a7d");
        assert_eq!(
            messages[0].1.as_ref().unwrap(),
            &vec!["raw/v1/dt=2026-11-28/hr=12/01JDQ3V5W1A2B3C4D5E6F7G8H9.ndjson.gz".to_string()]
        );
        assert_eq!(messages[1].1.as_ref().unwrap(), &Vec::<String>::new(), "the S3 test event names no object");
        assert!(messages[2].1.is_err(), "a body that is not JSON fails that message only");
    }

    #[test]
    fn decodes_keys_and_ignores_other_prefixes() {
        let event = serde_json::json!({"Records": [
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "raw/v1/a+b%3Dc.ndjson.gz"}}},
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "failed/v1/x.ndjson.gz"}}},
            {"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": "raw/v1/y.ndjson.gz"}}}
        ]});
        assert_eq!(keys_of_s3_event(&event).unwrap(), vec!["raw/v1/a b=c.ndjson.gz".to_string()]);
        assert!(keys_of_s3_event(&serde_json::json!({"Records": [{"nope": 1}]})).is_err());
    }
}
