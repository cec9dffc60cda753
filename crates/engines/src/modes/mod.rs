//! One module per provisioning mode, each written against [`crate::common::Recipe`] and the
//! ports only: `inputs` derives the mode's share of a pool's inputs (once, for both plan and
//! prepare), `plan` lists the steps without I/O, `prepare` carries them out.

pub mod binary;
pub mod container;
pub mod external;
pub mod package;
pub mod source;
