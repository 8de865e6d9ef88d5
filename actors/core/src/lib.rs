//! The shared vocabulary of Shoal: object keys, resource versions, selectors, API errors as
//! Kubernetes `Status` objects, the messages that cross processes, and supervision.

pub mod client;
pub mod deletion;
pub mod disruption;
pub mod error;
pub mod events;
pub mod faults;
pub mod keys;
pub mod logging;
pub mod messages;
pub mod selector;
pub mod supervisor;
pub mod time;
pub mod version;

pub use error::ApiError;
pub use keys::{ObjectKey, shard_for};
pub use messages::{
    ApiReply, ApiRequest, ApiServerMsg, Fence, FieldValidation, PatchKind, RequestOptions, Verb,
};
pub use version::CompositeVersion;

/// The process group every ApiServer actor joins; callers find the API through it.
pub const APISERVER_GROUP: &str = "apiserver";
