//! What Postline's services say to each other and to partners, as data: the
//! event envelope, the subscription and its retry policy, tenants, secrets,
//! and the validation problems that name a field. Pure types and rules; no
//! I/O happens here.

pub mod envelope;
pub mod ids;
pub mod problem;
pub mod retry_policy;
pub mod secret;
pub mod signing_secret;
pub mod subscription;
pub mod tenant;
