//! `cargo xtask prepare`: ahead of the workshop, while online, so the day needs no download:
//! compile everything, build the book, and make sure a PostgreSQL image (or local binaries) is there.

use std::path::Path;

use anyhow::{bail, Result};
use labs::pg::{find_local_binaries, DockerEngine, ProviderConfig};

use crate::book::{self, Edition};
use crate::{cargo, minutes, run_command_within};

/// The image `.ci/postgres-image/build.sh` builds from Debian's packages.
const DEBIAN_IMAGE: &str = "labs-postgres:15-debian";

pub fn run(root: &Path, image_from_debian: bool) -> Result<()> {
    // --all-targets: the tests' dependencies too, so `cargo xtask check` works offline.
    run_command_within(cargo(root).args(["build", "--workspace", "--all-targets"]), minutes(90))?;
    book::build(root, Edition::Full, &Edition::Full.default_out(root))?;
    println!("book: built into target/book");

    let image = ProviderConfig::from_env(None)?.image;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let engine = match runtime.block_on(DockerEngine::detect()) {
        Ok(engine) => engine,
        Err(reason) => {
            println!("postgres: no Docker engine answered ({reason}).");
            return match find_local_binaries() {
                Ok(dir) => {
                    println!("postgres: the labs will use the local PostgreSQL binaries in {} (--pg local).", dir.display());
                    Ok(())
                }
                Err(local) => bail!(
                    "no PostgreSQL for the labs: {local}.\nInstall one of: Docker (then rerun this), or PostgreSQL 15's server \
                     binaries (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15)"
                ),
            };
        }
    };

    if image_from_debian {
        run_command_within(
            std::process::Command::new(root.join(".ci/postgres-image/build.sh")).arg(DEBIAN_IMAGE).current_dir(root),
            minutes(30),
        )?;
        println!("postgres: {DEBIAN_IMAGE} is ready. Use it with: export LABS_PG_IMAGE={DEBIAN_IMAGE}");
        return Ok(());
    }
    if runtime.block_on(engine.has_image(&image)) {
        println!("postgres: image {image} is present; the labs need no download.");
        return Ok(());
    }
    if let Err(e) = run_command_within(std::process::Command::new("docker").args(["pull", &image]), minutes(30)) {
        bail!(
            "{e:#}\nCould not pull {image}. On machines without access to an image registry, build one from Debian's \
             packages with `sudo .ci/postgres-image/build.sh` (or `cargo xtask prepare --image-from-debian` as root), \
             then export LABS_PG_IMAGE={DEBIAN_IMAGE}"
        );
    }
    println!("postgres: image {image} pulled; the labs need no download.");
    Ok(())
}
