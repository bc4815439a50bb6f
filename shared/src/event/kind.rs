//! The six Segment spec calls.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which Segment call an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// Who the user is, with traits.
    Identify,
    /// Something the user did, with properties.
    Track,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// The user joined a group (account, company), with the group's traits.
    Group,
    /// Two ids are the same person (`previousId` → `userId`).
    Alias,
}

impl EventType {
    /// Every call, in the spec's order.
    pub const ALL: [EventType; 6] =
        [EventType::Identify, EventType::Track, EventType::Page, EventType::Screen, EventType::Group, EventType::Alias];

    /// The wire name (`"track"`), also the single-call endpoint's last path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }

    /// The call named `name`, if it is one. Names are exact, as in the spec.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
        }
        assert_eq!(EventType::parse("Track"), None);
        assert_eq!(EventType::parse("batch"), None);
    }
}
