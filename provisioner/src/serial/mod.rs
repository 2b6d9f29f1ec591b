//! Sensors reached over a serial line through the station's fixture: the framed protocol, the
//! station's end of the line, and a device simulator that speaks it.

pub mod device;
pub mod link;
pub mod protocol;
