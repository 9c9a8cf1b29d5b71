//! Typed client of the DSS jobs REST API.
