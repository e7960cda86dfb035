//! What ringd and loadgen share, and nothing of the server: the protocols by name, the
//! origin's greeting, and the units of the command line. loadgen depends on this, not on
//! the server.

pub mod units;

/// The greeting the origin server sent.
pub const DEFAULT_GREETING: &str = "Hello, world!";

/// Which protocol a server speaks (and a load generator expects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolKind {
    /// Send back every byte received, in order.
    Echo,
    /// Read one message, reply the greeting, close: the origin server.
    Hello,
    /// HTTP/1.1 plaintext with keep-alive and pipelining.
    Http,
}

impl ProtocolKind {
    /// Every protocol.
    pub const ALL: [ProtocolKind; 3] =
        [ProtocolKind::Echo, ProtocolKind::Hello, ProtocolKind::Http];

    /// What it does, in a line (for help texts).
    pub fn summary(self) -> &'static str {
        match self {
            ProtocolKind::Echo => "Send back every byte received, in order",
            ProtocolKind::Hello => "Read one message, reply the greeting, close: the origin server",
            ProtocolKind::Http => "HTTP/1.1 plaintext with keep-alive and pipelining",
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Echo => "echo",
            ProtocolKind::Hello => "hello",
            ProtocolKind::Http => "http",
        }
    }
}

impl std::fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "clap")]
impl clap::ValueEnum for ProtocolKind {
    fn value_variants<'a>() -> &'a [Self] {
        &ProtocolKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.summary()))
    }
}
