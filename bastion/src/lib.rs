//! Data plane (edge and gateway); built by the bastion issue.
