//! The methods of `holdup.v1.Lab` as a type. Admission, spans, metrics, logs and the load
//! generator name an RPC with [`Rpc`], so a typo is a compile error and a new RPC is a new
//! variant that every `match` must place, not one more string literal somewhere.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// One method of the Lab service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rpc {
    Fast,
    SlowBackend,
    CpuBound,
    Sleep,
    UpstreamCall,
}

impl Rpc {
    /// Every RPC, in the order the proto declares them.
    pub const ALL: [Self; 5] = [
        Self::Fast,
        Self::SlowBackend,
        Self::CpuBound,
        Self::Sleep,
        Self::UpstreamCall,
    ];

    /// The method name as the proto spells it, and as the `grpc_method` label and the
    /// `rpc.method` span attribute carry it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fast => "Fast",
            Self::SlowBackend => "SlowBackend",
            Self::CpuBound => "CpuBound",
            Self::Sleep => "Sleep",
            Self::UpstreamCall => "UpstreamCall",
        }
    }

    /// Whether the RPC has an in-flight limit of its own (`--max-in-flight-per-rpc`) besides
    /// the server-wide one: every RPC but the `Fast` canary can hold a worker, a connection, a
    /// thread or a timer for long.
    pub const fn is_costly(self) -> bool {
        !matches!(self, Self::Fast)
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl EncodeLabelValue for Rpc {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.name())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::{FILE_DESCRIPTOR_SET, lab_server::SERVICE_NAME};

    #[test]
    fn the_names_are_the_methods_of_the_proto() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
            .expect("the build script wrote a valid descriptor set");
        let service = set
            .file
            .iter()
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |service| (file.package(), service))
            })
            .find(|(package, service)| format!("{package}.{}", service.name()) == SERVICE_NAME)
            .map(|(_, service)| service)
            .expect("the descriptor set holds the Lab service");
        let declared: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        let named: Vec<&str> = Rpc::ALL.iter().map(|rpc| rpc.name()).collect();
        assert_eq!(named, declared);
    }

    #[test]
    fn each_rpc_indexes_its_place_in_all() {
        for (index, rpc) in Rpc::ALL.into_iter().enumerate() {
            assert_eq!(rpc as usize, index, "{rpc}");
        }
    }
}
