//! The API server (DESIGN §5): the Kubernetes REST API over the store, and the actor that is
//! the cluster's one door to its state.

// `ApiError` carries the subject and causes a Kubernetes `Status` needs; it is returned only on
// the failure path, where its size costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod addresses;
pub mod admin;
pub mod core;
pub mod discovery;
pub mod fields;
pub mod filters;
pub mod http;
pub mod kinds;
pub mod managed;
pub mod negotiate;
pub mod objects;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod scale;
pub mod server;
pub mod strategic;
pub mod table;
pub mod tls;
pub mod validate;
pub mod whoami;

pub use server::{ApiServer, ApiServerArgs};
