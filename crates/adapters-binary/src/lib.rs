//! # adapters-binary
//!
//! Will hold the real `Fetcher` port adapter (streaming downloads hashed on the fly, resumable) and
//! the safe archive unpacker for binary mode.
//!
//! Status: not implemented yet. Binary mode is reported as unsupported by every engine recipe until
//! this crate provides the adapter.
