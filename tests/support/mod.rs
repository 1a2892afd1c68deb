//! Helpers shared by the integration tests. Include with `mod support;`.
//!
//! Not every test binary uses every helper.
#![allow(dead_code)]

pub mod balancer;
pub mod bastion;
pub mod broker;
pub mod browser;
pub mod deploy;
pub mod inproc;
pub mod load;
pub mod ocsf_schema;
pub mod ssh;
pub mod sshd;
pub mod term;
