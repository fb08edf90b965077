//! quorate
