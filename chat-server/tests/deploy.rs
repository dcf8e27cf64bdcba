//! The deployment files, checked without a Docker engine: docker-compose.yml has the
//! services, healthchecks, volumes and dependencies it should, every setting it gives
//! chat-server is one the server knows (and accepts), the load balancer points at the
//! nodes, and the Dockerfile builds a non-root image with a healthcheck.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chat_server::config::Config;
use clap::{CommandFactory as _, Parser as _};
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every environment variable chat-server reads, with the flag it stands for.
fn known_env() -> BTreeMap<String, String> {
    Config::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            Some((env, a.get_long()?.to_owned()))
        })
        .collect()
}

/// Resolves YAML merge keys (`<<: *anchor`), which compose supports.
fn merged(node: &Yaml) -> Yaml {
    match node {
        Yaml::Hash(map) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            if let Some(Yaml::Hash(base)) = map.get(&Yaml::String("<<".into())).map(merged) {
                out.extend(base);
            }
            for (k, v) in map {
                if k.as_str() != Some("<<") {
                    out.insert(k.clone(), merged(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(items) => Yaml::Array(items.iter().map(merged).collect()),
        other => other.clone(),
    }
}

fn compose() -> Yaml {
    let docs = YamlLoader::load_from_str(&repo_file("docker-compose.yml")).expect("valid YAML");
    merged(&docs[0])
}

fn keys(y: &Yaml) -> BTreeSet<String> {
    y.as_hash()
        .map(|h| {
            h.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `${VAR:-default}` becomes `default`, as compose does without the variable set.
fn substitute(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn chat_nodes(compose: &Yaml) -> Vec<(String, Yaml)> {
    compose["services"]
        .as_hash()
        .expect("services")
        .iter()
        .filter(|(_, s)| s["build"].as_str() == Some("."))
        .map(|(name, s)| (name.as_str().expect("name").to_owned(), s.clone()))
        .collect()
}

#[test]
fn compose_runs_two_nodes_on_postgres_and_redis_behind_a_balancer() {
    let compose = compose();
    let services = keys(&compose["services"]);
    for needed in ["postgres", "redis", "balancer"] {
        assert!(
            services.contains(needed),
            "service {needed} in {services:?}"
        );
    }
    let nodes = chat_nodes(&compose);
    assert!(nodes.len() >= 2, "at least two chat-server nodes");
    let declared_volumes = keys(&compose["volumes"]);
    for (name, service) in compose["services"].as_hash().expect("services") {
        let name = name.as_str().expect("name");
        let check = &service["healthcheck"]["test"];
        assert!(
            check.as_vec().is_some_and(|t| !t.is_empty()),
            "{name} has a healthcheck"
        );
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let source = volume
                .as_str()
                .expect("short volume syntax")
                .split(':')
                .next();
            let source = source.expect("source");
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(
                    declared_volumes.contains(source),
                    "{name}: named volume {source} is declared"
                );
            }
        }
    }
    for (name, node) in &nodes {
        for dependency in ["postgres", "redis"] {
            assert_eq!(
                node["depends_on"][dependency]["condition"].as_str(),
                Some("service_healthy"),
                "{name} waits for a healthy {dependency}"
            );
        }
        assert!(
            node["volumes"].as_vec().is_some_and(|v| !v.is_empty()),
            "{name} keeps its data directory in a volume"
        );
    }
    // The balancer sends traffic to exactly the nodes, on their HTTP port.
    let nginx = repo_file("deploy/nginx.conf");
    let block = nginx
        .split_once("upstream chat {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(block, _)| block)
        .expect("an upstream block");
    let upstreams: BTreeSet<String> = block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = nodes
        .iter()
        .map(|(name, node)| {
            let addr = node["environment"]["CHAT_HTTP_ADDR"]
                .as_str()
                .expect("CHAT_HTTP_ADDR");
            let port = addr.rsplit(':').next().expect("port");
            format!("{name}:{port}")
        })
        .collect();
    assert_eq!(upstreams, expected);
    assert!(
        nginx.contains("proxy_set_header Upgrade"),
        "WebSocket upgrades pass through"
    );
}

#[test]
fn every_setting_compose_gives_the_server_is_one_it_knows_and_accepts() {
    let known = known_env();
    for (name, node) in chat_nodes(&compose()) {
        let env = node["environment"].as_hash().expect("environment map");
        let mut args = vec!["chat-server".to_owned()];
        for (key, value) in env {
            let key = key.as_str().expect("key");
            let flag = known
                .get(key)
                .unwrap_or_else(|| panic!("{name}: chat-server does not read {key}"));
            let value = match value {
                Yaml::String(s) => substitute(s),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                other => panic!("{name}: {key} = {other:?}"),
            };
            args.push(format!("--{flag}={value}"));
        }
        let config = Config::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("{name}: the server refuses its settings {args:?}: {e}"));
        assert!(
            config.database_url().starts_with("postgres://"),
            "{name} uses PostgreSQL"
        );
        assert!(
            config
                .redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("redis://")),
            "{name} joins the cluster bus"
        );
        assert_eq!(
            config.http_addr.ip().to_string(),
            "0.0.0.0",
            "{name} listens beyond localhost"
        );
    }
}

#[test]
fn the_image_is_multi_stage_non_root_and_health_checked() {
    let dockerfile = repo_file("Dockerfile");
    let instructions: Vec<(String, String)> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(i, rest)| (i.to_uppercase(), rest.trim().to_owned()))
        .collect();
    let of = |name: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, rest)| rest.as_str())
            .collect()
    };
    let stages = of("FROM");
    assert!(
        stages.len() >= 3,
        "web, build and runtime stages: {stages:?}"
    );
    assert!(
        stages
            .iter()
            .any(|s| s.contains("node:") && s.ends_with("AS web"))
    );
    let user = of("USER");
    assert!(
        user.last().is_some_and(|u| *u != "root" && *u != "0"),
        "runs as a non-root user: {user:?}"
    );
    assert_eq!(of("HEALTHCHECK").len(), 1, "one healthcheck");
    let exposed = of("EXPOSE").join(" ");
    assert!(
        exposed.contains("8080/tcp") && exposed.contains("4433/udp"),
        "{exposed}"
    );
    // Every ENV is a setting the server reads, and the UI is where CHAT_WEB_DIR says.
    let known = known_env();
    let env: BTreeMap<String, String> = of("ENV")
        .iter()
        .flat_map(|rest| rest.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for key in env.keys() {
        assert!(
            known.contains_key(key),
            "the Dockerfile sets {key}, which chat-server does not read"
        );
    }
    // The UI built in the web stage lands in web/dist before the server is compiled,
    // so the binary carries it (feature embedded-web).
    assert!(
        of("COPY")
            .iter()
            .any(|c| c.starts_with("--from=web") && c.ends_with(" web/dist")),
        "the web build is copied to web/dist for the server build"
    );
    // The image runs in compose on PostgreSQL with the Redis bus, and can keep files in
    // an S3 bucket: its build has all three, with the fastest profile.
    let build = of("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build");
    assert!(
        build.contains("--features postgres,cluster,s3") && build.contains("--profile dist"),
        "{build}"
    );
    // Every crate of the workspace is copied into the build stage.
    let manifest = repo_file("Cargo.toml");
    let members = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    for member in members.split('"').skip(1).step_by(2) {
        assert!(
            of("COPY")
                .iter()
                .any(|c| c.split_whitespace().next() == Some(member)),
            "the build stage copies the workspace member {member}"
        );
    }
    // What the build stage copies exists, and the ignore file keeps build output out.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for copy in of("COPY").iter().filter(|c| !c.starts_with("--from")) {
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(root.join(source).exists(), "COPY source {source} exists");
        }
    }
    let ignore = repo_file(".dockerignore");
    for excluded in ["target", "**/node_modules"] {
        assert!(
            ignore.lines().any(|l| l.trim() == excluded),
            ".dockerignore has {excluded}"
        );
    }
}
