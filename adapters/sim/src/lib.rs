//! Simulated legacy department systems (and the province's platforms: case records, SMS) for
//! tests, the demo and benchmarks, one module per kind,
//! each as awkward as the real ones: they keep their own state, give their own case numbers,
//! decide after a delay, and inject the faults their real counterparts show. `core` holds what
//! they share. `platform` and `hotline` stand in for the provincial platform and the 12345
//! hotline's reply interface.

pub mod core;
pub mod exchange_db;
pub mod form_xml;
pub mod hotline;
pub mod http_json;
pub mod json_header;
pub mod platform;
pub mod sm4_gateway;
pub mod sms;
pub mod soap;
pub mod xml;
