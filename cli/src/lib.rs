//! What the `hallmark` command line shares with the other clients of the CA (the factory
//! provisioner): the connection to the CA from flags or `HALLMARK_*` variables.

pub mod client;
