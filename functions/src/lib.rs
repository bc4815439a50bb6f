//! The CDP's serverless functions as a library: handlers generic over a storage port, and the port's adapters
//! (S3 through `aws-sdk-s3`, and a local folder). Lambda binaries and the local runner are thin shells over
//! these handlers, so every handler is tested without AWS.

pub mod activation;
#[cfg(feature = "analysis")]
pub mod analysis;
pub mod api;
pub mod audit;
pub mod catalog;
pub mod collect;
pub mod columnar;
pub mod config;
pub mod definitions;
pub mod error;
pub mod import;
pub mod ingest;
pub mod lake;
pub mod lambda;
pub mod notifications;
pub mod predict;
pub mod privacy;
pub mod raw;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod suppression;
pub mod tagging;
#[cfg(test)]
mod testing;
pub mod vault;

pub use error::Error;
