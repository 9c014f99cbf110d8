//! Link the stand-alone kernel image (`src/bin/linux.rs`) where the VMM
//! loads images, with its relocations applied, as the `eremite` crate does
//! for hermit images.

fn main() {
    println!("cargo:rustc-link-arg-bins=--image-base=0x200000");
    println!("cargo:rustc-link-arg-bins=--apply-dynamic-relocs");
}
