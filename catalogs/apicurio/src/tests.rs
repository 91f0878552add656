use super::*;

fn dialect(options: serde_json::Value) -> Result<Apicurio, BuildError> {
    let options: ApicurioOptions = serde_json::from_value(options).unwrap();
    Apicurio::new(&options)
}

fn fetched(json: serde_json::Value) -> Fetched {
    Fetched {
        text: Arc::from(json.to_string()),
        json: Some(json),
    }
}

#[test]
fn the_url_selects_the_api_and_paths_follow_it() {
    let v2 = dialect(serde_json::json!({"url": "http://h:8080"})).unwrap();
    assert_eq!(v2.api(), Api::V2);
    assert_eq!(
        v2.subject_path("items-value", "latest"),
        "/apis/registry/v2/groups/default/artifacts/items-value/meta"
    );
    assert_eq!(
        v2.subject_path("items value", "3"),
        "/apis/registry/v2/groups/default/artifacts/items%20value/versions/3/meta"
    );
    assert_eq!(v2.id_path(7), "/apis/registry/v2/ids/globalIds/7");
    let named = dialect(serde_json::json!({"url": "http://h:8080/apis/registry/v2/"})).unwrap();
    assert_eq!(named.id_path(7), "/ids/globalIds/7");

    let v3 = dialect(serde_json::json!({
        "url": "https://h/registry/apis/registry/v3",
        "group-id": "orders",
        "use-id": "contentId",
    }))
    .unwrap();
    assert_eq!(v3.api(), Api::V3);
    assert_eq!(
        v3.subject_path("items-value", "latest"),
        "/groups/orders/artifacts/items-value/versions/branch=latest"
    );
    assert_eq!(
        v3.subject_path("items-value", "2"),
        "/groups/orders/artifacts/items-value/versions/2"
    );
    assert_eq!(v3.id_path(9), "/ids/contentIds/9");

    let error = dialect(serde_json::json!({"url": "http://h/apis/registry/v1"})).unwrap_err();
    assert_eq!(error.path, "options.url");
}

#[test]
fn the_id_use_id_names_is_read_from_the_version_metadata() {
    let meta = fetched(serde_json::json!({"globalId": 12, "contentId": 3, "version": "1"}));
    let global = dialect(serde_json::json!({"url": "http://h"})).unwrap();
    assert_eq!(global.read_subject(&meta).unwrap().0, 12);
    let content = dialect(serde_json::json!({"url": "http://h", "use-id": "contentId"})).unwrap();
    assert_eq!(content.read_subject(&meta).unwrap().0, 3);
    assert!(
        global
            .read_subject(&fetched(serde_json::json!({"contentId": 3})))
            .unwrap_err()
            .contains("globalId")
    );
    assert!(
        global
            .read_subject(&fetched(serde_json::json!({"globalId": 1u64 << 40})))
            .is_err()
    );
    // The content by id is the schema as registered, JSON or not.
    let proto = Fetched {
        text: Arc::from("syntax = \"proto3\";"),
        json: None,
    };
    assert_eq!(
        global.read_schema(1, &proto).unwrap().as_ref(),
        "syntax = \"proto3\";"
    );
}

#[test]
fn ids_are_framed_in_eight_bytes_or_four_when_legacy() {
    let default = dialect(serde_json::json!({"url": "http://h"})).unwrap();
    assert_eq!(default.prefix(0x0102_0304), vec![0, 0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(
        default
            .unprefix(&[0, 0, 0, 0, 0, 0, 0, 0, 7, 0xaa])
            .unwrap(),
        Some((7, &[0xaa][..]))
    );
    assert!(default.unprefix(&[0, 0, 0, 0, 7]).is_err());
    assert!(default.unprefix(&[0, 0, 0, 0, 1, 0, 0, 0, 7]).is_err());
    assert!(default.unprefix(&[1, 0, 0, 0, 0, 0, 0, 0, 7]).is_err());
    let legacy = dialect(serde_json::json!({"url": "http://h", "id-encoding": "legacy"})).unwrap();
    assert_eq!(legacy.prefix(0x0102_0304), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        legacy.unprefix(&[0, 0, 0, 0, 7, 0xaa]).unwrap(),
        Some((7, &[0xaa][..]))
    );
    assert!(legacy.unprefix(&[0, 0, 0]).is_err());
}

#[test]
fn options_are_zillas() {
    let parse = |options: serde_json::Value| serde_json::from_value::<ApicurioOptions>(options);
    assert!(parse(serde_json::json!({"url": "http://h", "use-id": "globalId", "id-encoding": "default", "max-age": 5, "group-id": "g"})).is_ok());
    assert!(parse(serde_json::json!({"url": "http://h", "use-id": "global"})).is_err());
    assert!(parse(serde_json::json!({"url": "http://h", "id-encoding": "short"})).is_err());
    assert!(parse(serde_json::json!({"url": "http://h", "credentials": {}})).is_err());
    let error = open(
        "test:apicurio0",
        &ApicurioOptions {
            url: "ftp://h".to_owned(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(error.path, "options.url");
}

proptest::proptest! {
    #[test]
    fn prefixes_round_trip(id in proptest::prelude::any::<u32>(), legacy in proptest::prelude::any::<bool>(), payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32)) {
        let encoding = if legacy { "legacy" } else { "default" };
        let dialect = dialect(serde_json::json!({"url": "http://h", "id-encoding": encoding})).unwrap();
        let mut framed = dialect.prefix(id);
        framed.extend_from_slice(&payload);
        let (read_id, rest) = dialect.unprefix(&framed).unwrap().unwrap();
        proptest::prop_assert_eq!(read_id, id);
        proptest::prop_assert_eq!(rest, &payload[..]);
    }
}
