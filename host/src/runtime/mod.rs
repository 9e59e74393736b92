//! The wasmtime sandbox that runs one plugin evaluation.
