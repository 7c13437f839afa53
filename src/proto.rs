//! The code generated from `proto/holdup/v1/lab.proto`, and its descriptor set for reflection.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("holdup.v1");

/// The encoded `FileDescriptorSet` of `holdup.v1`, served by the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("holdup_descriptor");
