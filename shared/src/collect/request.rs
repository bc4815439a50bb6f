//! What a shell hands the pipeline about one HTTP request.

use std::net::IpAddr;

use crate::event::{EventType, Geo};

/// Which collect endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/batch` (and `/v1/import`): `{"batch": [...], "context": ..., "sentAt": ...}`.
    Batch,
    /// `/v1/{identify,track,page,screen,group,alias}`: the body is one event of that type.
    Single(EventType),
}

/// The parts of a request the pipeline decides on. Shells fill it from their HTTP framework.
#[derive(Debug, Clone)]
pub struct CollectRequest<'a> {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The raw body.
    pub body: &'a [u8],
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The `Origin` header, if any (browsers send it; servers and apps usually do not).
    pub origin: Option<&'a str>,
    /// The `User-Agent` header, used when the event carries no `context.userAgent`.
    pub user_agent: Option<&'a str>,
    /// The client's address as the shell trusts it (the edge's `CF-Connecting-IP`, the socket's peer locally).
    pub client_ip: Option<IpAddr>,
    /// Geolocation the edge attached to the request, if any.
    pub geo: Option<Geo>,
    /// The `Content-Encoding` header, if any: gzip and deflate bodies are decoded, others refused (415).
    pub content_encoding: Option<&'a str>,
}

impl<'a> CollectRequest<'a> {
    /// A request with only an endpoint and a body; the rest absent.
    pub fn new(endpoint: Endpoint, body: &'a [u8]) -> Self {
        Self {
            endpoint,
            body,
            authorization: None,
            origin: None,
            user_agent: None,
            client_ip: None,
            geo: None,
            content_encoding: None,
        }
    }
}
