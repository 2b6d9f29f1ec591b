//! The factory station: provisions production lots of sensors and gateways. For each device
//! of a lot manifest it obtains a key at the target (inside the device's secure element when
//! it has one), has the CA issue a certificate for it, injects certificate, chain and trust
//! bundle, reads them back and checks them, and journals every step so that a lot survives
//! crashes and can be run again.

#![warn(missing_docs)]

pub mod credential;
pub mod journal;
pub mod manifest;
pub mod report;
pub mod serial;
pub mod station;
pub mod target;
