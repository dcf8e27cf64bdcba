//! The web client's generated TypeScript is what the Rust types say: this test fails
//! when `web/src/lib/generated/` is stale, and rewrites it with `CHAT_UPDATE_TS=1`.

use std::path::PathBuf;

fn check(file: &str, fresh: &str) -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../web/src/lib/generated")
        .join(file);
    if std::env::var_os("CHAT_UPDATE_TS").is_some() {
        std::fs::create_dir_all(path.parent().expect("folder")).expect("folder");
        std::fs::write(&path, fresh).expect("written");
        return None;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    (committed != fresh).then(|| {
        format!(
            "{} is stale: run `CHAT_UPDATE_TS=1 cargo test -p chat-api --features ts --test typescript` and commit it",
            path.display()
        )
    })
}

#[test]
fn generated_typescript_is_fresh() {
    let stale: Vec<String> = [
        check("protocol.ts", &chat_proto::ts::typescript()),
        check("api.ts", &chat_api::ts::typescript()),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}
