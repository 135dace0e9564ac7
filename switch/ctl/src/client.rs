//! Client side of the control protocol. To be written.
