//! Where the web UI served at `/` comes from: a directory (`--web-dir`) or the build
//! compiled into the binary (feature `embedded-web`, the default; see `build.rs`).

use std::path::{Path, PathBuf};

/// Where the web UI comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebUi {
    /// A directory holding a build (`--web-dir`).
    Dir(PathBuf),
    /// The build embedded in the binary when it was compiled.
    Embedded,
}

impl WebUi {
    /// `--web-dir` if given, else the build inside the binary, else `web/dist` under
    /// the working directory when it holds a build (a binary built without the UI, run
    /// from the checkout).
    pub fn choose(web_dir: Option<&Path>) -> Option<Self> {
        if let Some(dir) = web_dir {
            return Some(WebUi::Dir(dir.to_path_buf()));
        }
        if embedded::available() {
            return Some(WebUi::Embedded);
        }
        let built = PathBuf::from("web/dist");
        built
            .join("index.html")
            .is_file()
            .then_some(WebUi::Dir(built))
    }
}

impl std::fmt::Display for WebUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebUi::Dir(dir) => write!(f, "from {}", dir.display()),
            WebUi::Embedded => f.write_str("built in"),
        }
    }
}

/// The web UI compiled into the binary.
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_ui.rs"));

    /// Whether this binary holds a web UI.
    pub fn available() -> bool {
        get("index.html").is_some()
    }

    /// The file at `path` (relative, `/`-separated).
    pub fn get(path: &str) -> Option<&'static [u8]> {
        FILES
            .binary_search_by(|(name, _)| (*name).cmp(path))
            .ok()
            .map(|i| FILES[i].1)
    }
}
