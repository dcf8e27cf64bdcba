//! `openapi.yaml` describes the bodies the types define: for every endpoint, the request
//! and success response schemas in the document have the same shape (properties,
//! required fields, JSON types, string enumerations, nullability, arrays) as the JSON
//! Schema `schemars` derives from the Rust types. A field added, renamed, made optional
//! or retyped in the code fails here until the document says the same.

use std::collections::{BTreeMap, BTreeSet};

use chat_api::schema::{Described, endpoints};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// The document, as JSON.
fn document() -> Value {
    let text = include_str!("../../openapi.yaml");
    let docs = YamlLoader::load_from_str(text).expect("openapi.yaml is YAML");
    to_json(&docs[0])
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(r) => r.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("unexpected key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unexpected YAML node {other:?}"),
    }
}

/// The shape of a JSON value a schema allows, with what is only documentation removed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Any,
    Null,
    Bool,
    Integer,
    Number,
    String,
    /// A string from a fixed set (`enum` or `const`).
    Strings(BTreeSet<String>),
    Array(Box<Shape>),
    Object {
        properties: BTreeMap<String, Shape>,
        required: BTreeSet<String>,
    },
    /// One of several shapes (`oneOf`, `anyOf`, a list of types).
    Union(BTreeSet<Shape>),
}

/// Reads the shape of `schema`, resolving `$ref`s against `root`.
fn shape(schema: &Value, root: &Value, depth: usize) -> Shape {
    assert!(depth < 32, "schema nests too deep (a reference cycle?)");
    let Some(map) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Shape::Any,
            other => panic!("unexpected schema {other}"),
        };
    };
    if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .unwrap_or_else(|| panic!("unresolved reference {reference}"));
        return shape(target, root, depth + 1);
    }
    if let Some(parts) = map.get("allOf").and_then(Value::as_array) {
        let mut properties = BTreeMap::new();
        let mut required = BTreeSet::new();
        for part in parts {
            match shape(part, root, depth + 1) {
                Shape::Object {
                    properties: p,
                    required: r,
                } => {
                    properties.extend(p);
                    required.extend(r);
                }
                other => panic!("allOf of a non-object {other:?}"),
            }
        }
        return Shape::Object {
            properties,
            required,
        };
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = map.get(key).and_then(Value::as_array) {
            return union(options.iter().map(|o| shape(o, root, depth + 1)));
        }
    }
    if let Some(value) = map.get("const") {
        return strings(std::slice::from_ref(value));
    }
    if let Some(values) = map.get("enum").and_then(Value::as_array) {
        return strings(values);
    }
    match map.get("type") {
        None => Shape::Any,
        Some(Value::Array(types)) => union(types.iter().map(|t| {
            let mut single = map.clone();
            single.insert("type".into(), t.clone());
            shape(&Value::Object(single), root, depth + 1)
        })),
        Some(Value::String(t)) => match t.as_str() {
            "null" => Shape::Null,
            "boolean" => Shape::Bool,
            "integer" => Shape::Integer,
            "number" => Shape::Number,
            "string" => Shape::String,
            "array" => Shape::Array(Box::new(
                map.get("items")
                    .map_or(Shape::Any, |items| shape(items, root, depth + 1)),
            )),
            "object" => Shape::Object {
                properties: map
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|props| {
                        props
                            .iter()
                            .map(|(k, v)| (k.clone(), shape(v, root, depth + 1)))
                            .collect()
                    })
                    .unwrap_or_default(),
                required: map
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|names| {
                        names
                            .iter()
                            .map(|n| n.as_str().expect("required names").to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            other => panic!("unknown type {other}"),
        },
        Some(other) => panic!("unexpected type {other}"),
    }
}

fn strings(values: &[Value]) -> Shape {
    Shape::Strings(
        values
            .iter()
            .map(|v| v.as_str().expect("string enumerations only").to_owned())
            .collect(),
    )
}

fn union(options: impl Iterator<Item = Shape>) -> Shape {
    let mut all = BTreeSet::new();
    for option in options {
        match option {
            Shape::Union(inner) => all.extend(inner),
            other => {
                all.insert(other);
            }
        }
    }
    // An enumeration written as one `const` per value (to document each) is one set.
    if all.len() > 1 && all.iter().all(|s| matches!(s, Shape::Strings(_))) {
        let values = all
            .into_iter()
            .flat_map(|s| match s {
                Shape::Strings(values) => values,
                _ => unreachable!(),
            })
            .collect();
        return Shape::Strings(values);
    }
    if all.len() == 1 {
        all.into_iter().next().expect("one")
    } else {
        Shape::Union(all)
    }
}

/// Where `documented` differs from what the code defines, as readable lines. A
/// document may narrow a plain string of the code to the values it takes (`const:
/// Bearer`); everything else must be the same.
fn differences(documented: &Shape, code: &Shape, at: &str, out: &mut Vec<String>) {
    match (documented, code) {
        (Shape::Strings(_), Shape::String) => {}
        (
            Shape::Object {
                properties: dp,
                required: dr,
            },
            Shape::Object {
                properties: cp,
                required: cr,
            },
        ) => {
            for name in dp.keys().filter(|k| !cp.contains_key(*k)) {
                out.push(format!("{at}.{name}: documented, not in the code"));
            }
            for name in cp.keys().filter(|k| !dp.contains_key(*k)) {
                out.push(format!("{at}.{name}: in the code, not documented"));
            }
            if dr != cr {
                out.push(format!(
                    "{at}: documented required {dr:?}, the code requires {cr:?}"
                ));
            }
            for (name, d) in dp {
                if let Some(c) = cp.get(name) {
                    differences(d, c, &format!("{at}.{name}"), out);
                }
            }
        }
        (Shape::Array(d), Shape::Array(c)) => differences(d, c, &format!("{at}[]"), out),
        (Shape::Union(d), Shape::Union(c)) if d.len() == c.len() => {
            // Pair the options in order (the sets are sorted by shape kind); report the
            // first mismatching pair's details.
            for (d, c) in d.iter().zip(c) {
                differences(d, c, &format!("{at}|"), out);
            }
        }
        (d, c) if d == c => {}
        (d, c) => out.push(format!("{at}: documented {d:?}, the code has {c:?}")),
    }
}

/// The JSON schema of the success response of an operation, or `None` for 204.
fn documented_response(operation: &Value, root: &Value) -> Option<Value> {
    let responses = operation["responses"].as_object().expect("responses");
    let (status, response) = responses
        .iter()
        .filter(|(status, _)| status.starts_with('2'))
        .min_by_key(|(status, _)| status.as_str())
        .expect("a success response");
    let mut response = response.clone();
    while let Some(reference) = response.get("$ref").and_then(Value::as_str) {
        response = root
            .pointer(reference.strip_prefix('#').expect("local reference"))
            .expect("resolved response")
            .clone();
    }
    // No JSON body: 204, another success without content, or bytes (files).
    response
        .pointer("/content/application~1json/schema")
        .filter(|_| status != "204")
        .cloned()
}

fn operation<'a>(root: &'a Value, endpoint: &Described) -> &'a Value {
    let method = endpoint.method.as_str().to_ascii_lowercase();
    root["paths"][endpoint.path]
        .get(&method)
        .unwrap_or_else(|| panic!("openapi.yaml lacks {} {}", endpoint.method, endpoint.path))
}

#[test]
fn every_endpoint_is_documented_with_the_bodies_its_types_define() {
    let root = document();
    let mut found = Vec::new();
    for endpoint in endpoints() {
        let name = format!("{} {}", endpoint.method, endpoint.path);
        let operation = operation(&root, &endpoint);

        let documented = operation
            .pointer("/requestBody/content/application~1json/schema")
            .map(|s| shape(s, &root, 0));
        let code = endpoint
            .request
            .as_ref()
            .map(|s| shape(s.as_value(), s.as_value(), 0));
        match (&documented, &code) {
            (Some(d), Some(c)) => differences(d, c, &format!("{name} request"), &mut found),
            (None, None) => {}
            (Some(_), None) => found.push(format!("{name}: documents a body it does not take")),
            (None, Some(_)) => found.push(format!("{name}: takes a body it does not document")),
        }

        let documented = documented_response(operation, &root).map(|s| shape(&s, &root, 0));
        let code = endpoint
            .response
            .as_ref()
            .map(|s| shape(s.as_value(), s.as_value(), 0));
        match (&documented, &code) {
            (Some(d), Some(c)) => differences(d, c, &format!("{name} response"), &mut found),
            (None, None) => {}
            (Some(_), None) => found.push(format!("{name}: documents a body, answers 204")),
            (None, Some(_)) => found.push(format!("{name}: documents 204, answers a body")),
        }
    }
    assert!(
        found.is_empty(),
        "openapi.yaml disagrees with chat-api:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_documented_api_operation_is_an_endpoint_type() {
    let root = document();
    let typed: BTreeSet<String> = endpoints()
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    let mut untyped = Vec::new();
    for (path, item) in root["paths"].as_object().expect("paths") {
        // The document itself is the one /api/ resource that is not JSON.
        if !path.starts_with("/api/") || path == "/api/openapi.yaml" {
            continue;
        }
        let methods = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        for method in item
            .as_object()
            .expect("path item")
            .keys()
            .filter(|k| methods.contains(&k.as_str()))
        {
            let name = format!("{} {path}", method.to_ascii_uppercase());
            if !typed.contains(&name) {
                untyped.push(name);
            }
        }
    }
    assert!(untyped.is_empty(), "documented without a type: {untyped:?}");
}

/// The comparison itself notices drift: a renamed field, a lost requirement, a
/// retyped one.
#[test]
fn a_drifted_document_is_caught() {
    let root = document();
    let user = shape(&root["components"]["schemas"]["User"], &root, 0);
    let mut same = Vec::new();
    differences(&user, &user, "User", &mut same);
    assert!(same.is_empty());

    for (edit, expected) in [
        ("/properties/bio", "User.bio: in the code, not documented"),
        ("/required/0", "documented required"),
    ] {
        let mut drifted = root["components"]["schemas"]["User"].clone();
        let (parent, key) = edit.rsplit_once('/').expect("pointer");
        match drifted.pointer_mut(parent).expect("parent") {
            Value::Object(map) => {
                let value = map.remove(key).expect("field");
                map.insert(format!("{key}_renamed"), value);
            }
            Value::Array(items) => {
                items.remove(key.parse().expect("index"));
            }
            _ => unreachable!(),
        }
        let code = user.clone();
        let mut found = Vec::new();
        differences(&shape(&drifted, &root, 0), &code, "User", &mut found);
        assert!(
            found.iter().any(|f| f.contains(expected)),
            "{edit}: {found:?}"
        );
    }

    let mut retyped = root["components"]["schemas"]["User"].clone();
    retyped["properties"]["username"] = serde_json::json!({"type": "integer"});
    let mut found = Vec::new();
    differences(&shape(&retyped, &root, 0), &user, "User", &mut found);
    assert_eq!(found.len(), 1, "{found:?}");
}
