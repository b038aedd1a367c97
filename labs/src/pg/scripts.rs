//! The node scripts: every shell step the local and container backends run, one file each in
//! `scripts/`, compiled in. Parameters reach them as positional arguments or environment
//! variables, never spliced into their text, so `cargo xtask check` can shellcheck exactly
//! what runs.

/// A script as compiled in: its file's stem and its text.
#[derive(Clone, Copy, Debug)]
pub struct NodeScript {
    pub name: &'static str,
    pub text: &'static str,
}

macro_rules! node_scripts {
    ($($constant:ident = $name:literal;)*) => {
        $(pub(super) const $constant: NodeScript =
            NodeScript { name: $name, text: include_str!(concat!("scripts/", $name, ".sh")) };)*
        /// Every node script, for the shellcheck step of `cargo xtask check` (which also checks
        /// that this list and the files in `labs/src/pg/scripts/` agree).
        pub const NODE_SCRIPTS: &[NodeScript] = &[$($constant),*];
    };
}

node_scripts! {
    KEEPALIVE = "keepalive";
    FIND_BIN = "find_bin";
    INIT_PRIMARY = "init_primary";
    SET_PORT = "set_port";
    START = "start";
    CRASH = "crash";
    SIGNAL = "signal";
    CREATE_STANDBY = "create_standby";
    BASE_BACKUP = "base_backup";
    RESTORE_FROM_ARCHIVE = "restore_from_archive";
    LIST_ARCHIVE = "list_archive";
}
