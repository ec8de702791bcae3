//! asynq's task message, `asynq.TaskMessage` of `internal/proto/asynq.proto`.
//!
//! Producers and workers write it into Redis as an encoded protobuf in a
//! script argument; the proxy decodes it to learn the task's type, queue
//! and id before anything reaches Redis. Field numbers are asynq's (15,
//! the headers map, exists from v0.26.0). Decoding only reads: the
//! message that is forwarded is the client's own bytes.

use std::collections::HashMap;

/// The fields of `asynq.TaskMessage` the proxy reads or will sign.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskMessage {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(string, tag = "4")]
    pub queue: String,
    #[prost(int32, tag = "5")]
    pub retry: i32,
    #[prost(int32, tag = "6")]
    pub retried: i32,
    #[prost(string, tag = "7")]
    pub error_msg: String,
    #[prost(int64, tag = "8")]
    pub timeout: i64,
    #[prost(int64, tag = "9")]
    pub deadline: i64,
    #[prost(string, tag = "10")]
    pub unique_key: String,
    #[prost(int64, tag = "11")]
    pub last_failed_at: i64,
    #[prost(int64, tag = "12")]
    pub retention: i64,
    #[prost(int64, tag = "13")]
    pub completed_at: i64,
    #[prost(string, tag = "14")]
    pub group_key: String,
    #[prost(map = "string, string", tag = "15")]
    pub headers: HashMap<String, String>,
}

/// Decodes an encoded task message.
///
/// # Errors
///
/// The protobuf decoding error, for a refusal's text (it never quotes the
/// bytes).
pub fn decode(bytes: &[u8]) -> Result<TaskMessage, prost::DecodeError> {
    prost::Message::decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let msg = TaskMessage {
            r#type: "email:send".into(),
            payload: b"\x00\xffpayload".to_vec(),
            id: "id-1".into(),
            queue: "critical".into(),
            retry: 25,
            ..Default::default()
        };
        let decoded = decode(&msg.encode_to_vec()).unwrap();
        assert_eq!(decoded, msg);
        // A string field holding invalid UTF-8: Go's decoder refuses it too.
        assert!(decode(b"\x0a\x02\xff\xfe").is_err());
        assert!(decode(b"\x0a\x05ab").is_err());
    }
}
