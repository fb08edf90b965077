//! Carrying out one step. `resources/` holds the pure builders of every object quorate owns.

pub mod resources;
