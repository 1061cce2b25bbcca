use super::*;

const BASE: &str = r#"
[auth]
anonymous_introspect = true

[store]
backend = "memory"
"#;

static FULL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!("{BASE}{ISSUER}"));

const ISSUER: &str = r#"
[[issuers]]
issuer = "https://id.example.com/"
audiences = ["https://api.example.com"]
jwks_uri = "https://id.example.com/jwks.json"
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    FileConfig::parse(text, &env(pairs))?.validate()
}

fn error_text(text: &str, pairs: &[(&str, &str)]) -> String {
    match load(text, pairs) {
        Ok(_) => String::from("<accepted>"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_file_gets_defaults() -> Result<(), ConfigError> {
    let config = load(&FULL, &[])?;
    assert_eq!(config.grpc_addr.port(), 50051);
    assert_eq!(config.max_token_bytes, DEFAULT_MAX_TOKEN_BYTES);
    let issuer = &config.issuers[0].keys;
    assert_eq!(issuer.policy.algorithms, vec![Algorithm::RS256]);
    assert_eq!(issuer.policy.typ, TypPolicy::Strict);
    assert!(matches!(issuer.source, keys::Source::JwksUri(_)));
    Ok(())
}

#[test]
fn unknown_key_is_named() {
    let text = format!("[server]\ngrpc_adr = \"0.0.0.0:1\"\n{}", *FULL);
    assert!(error_text(&text, &[]).contains("grpc_adr"));
}

#[test]
fn wrong_type_is_named() {
    let text = format!("[server]\nmax_token_bytes = \"big\"\n{}", *FULL);
    assert!(error_text(&text, &[]).contains("max_token_bytes"));
}

#[test]
fn environment_overrides_nested_keys_and_array_items() -> Result<(), ConfigError> {
    let config = load(
        &FULL,
        &[
            ("INTROSPECTD_SERVER__GRPC_ADDR", "127.0.0.1:6000"),
            ("INTROSPECTD_SERVER__EXPOSE_INACTIVE_REASON", "true"),
            ("INTROSPECTD_ISSUERS__0__AUDIENCES", r#"["a", "b"]"#),
            ("INTROSPECTD_ISSUERS__0__LEEWAY_SECS", "5"),
            // Variables without `__` belong to the command line and are left alone.
            ("INTROSPECTD_CONFIG", "/etc/introspectd.toml"),
            ("INTROSPECTD_REQUIRE_ALL", "1"),
        ],
    )?;
    assert_eq!(config.grpc_addr.port(), 6000);
    assert!(config.expose_inactive_reason);
    assert_eq!(config.issuers[0].keys.policy.audiences, vec!["a", "b"]);
    assert_eq!(config.issuers[0].keys.policy.leeway_secs, 5);
    Ok(())
}

#[test]
fn environment_typo_is_named() {
    let text = error_text(&FULL, &[("INTROSPECTD_SERVER__GRPC_ADR", "127.0.0.1:1")]);
    assert!(text.contains("grpc_adr"), "{text}");
}

#[test]
fn a_wrong_type_names_the_key_path_in_toml_terms() {
    let text = format!("{}leeway_secs = \"lots\"\n", *FULL);
    let error = error_text(&text, &[]);
    assert!(
        error.starts_with(
            r#"issuers[0].leeway_secs: expected a non-negative integer, got "lots" (line "#
        ),
        "{error}"
    );
    let error = error_text(
        &FULL.replace("anonymous_introspect = true", "anonymous_introspect = 1"),
        &[],
    );
    assert!(
        error.starts_with("auth.anonymous_introspect: expected a boolean, got 1"),
        "{error}"
    );
}

#[test]
fn an_unknown_key_gets_its_path_and_a_suggestion() {
    let error = error_text(&format!("{}leway_secs = 5\n", *FULL), &[]);
    assert!(
        error.starts_with(r#"issuers[0]: unknown key "leway_secs", did you mean "leeway_secs"?"#),
        "{error}"
    );
    let error = error_text(&format!("[cahce]\nmax_entries = 1\n{}", *FULL), &[]);
    assert!(
        error.starts_with(r#"unknown key "cahce", did you mean "cache"?"#),
        "{error}"
    );
    let error = error_text(
        &FULL.replace("backend = \"memory\"", "backend = \"memroy\""),
        &[],
    );
    assert!(
        error.starts_with(r#"store.backend: unknown value "memroy", did you mean "memory"?"#),
        "{error}"
    );
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let error = error_text(&FULL, &[("INTROSPECTD_ISSUERS__0__LEEWAY_SECS", "lots")]);
    assert_eq!(
        error,
        r#"environment variable INTROSPECTD_ISSUERS__0__LEEWAY_SECS: issuers[0].leeway_secs: expected a non-negative integer, got "lots""#
    );
}

#[test]
fn no_issuers_is_refused() {
    assert!(error_text("", &[]).starts_with("issuers:"));
}

#[test]
fn nobody_able_to_call_is_refused() {
    let text = FULL.replace(
        "anonymous_introspect = true",
        "anonymous_introspect = false",
    );
    assert!(error_text(&text, &[]).starts_with("auth:"));
}

#[test]
fn mtls_clients_need_a_client_ca_and_count_as_callers() {
    let client = r#"
[[auth.clients]]
name = "edge"
identity = "spiffe://cluster.local/ns/edge/sa/gateway"
roles = ["introspect"]
"#;
    let closed = FULL.replace(
        "anonymous_introspect = true",
        "anonymous_introspect = false",
    );
    let without_ca = format!("{closed}{client}");
    assert!(
        error_text(&without_ca, &[]).starts_with("auth.clients:"),
        "{}",
        error_text(&without_ca, &[])
    );
    let tls = "\n[tls]\ncert_file = \"/tls/tls.crt\"\nkey_file = \"/tls/tls.key\"\nclient_ca_file = \"/tls/ca.crt\"\n";
    let with_ca = format!("{closed}{client}{tls}");
    match load(&with_ca, &[]) {
        Ok(config) => {
            let tls = config.tls.unwrap_or_else(|| unreachable!("no tls"));
            assert_eq!(tls.reload_interval, Duration::from_secs(10));
        }
        Err(e) => unreachable!("mTLS clients alone should be enough: {e}"),
    }
    let no_identity = with_ca.replace("spiffe://cluster.local/ns/edge/sa/gateway", "");
    assert!(error_text(&no_identity, &[]).starts_with("auth.clients:"));
}

#[test]
fn api_keys_inline_and_from_file() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("keys.toml");
    let hash = crate::auth::hash_key("from-file");
    std::fs::write(
        &file,
        format!("[[api_keys]]\nname = \"ops\"\nsha256 = \"{hash}\"\nroles = [\"admin\"]\n"),
    )?;
    let text = FULL.replace(
        "anonymous_introspect = true",
        &format!(
            "api_keys_file = {file:?}\n[[auth.api_keys]]\nname = \"gw\"\nsha256 = \"{}\"\nroles = [\"introspect\"]",
            crate::auth::hash_key("inline")
        ),
    );
    let config = load(&text, &[])?;
    assert!(config.api_keys.authenticate("from-file").is_some());
    assert!(config.api_keys.authenticate("inline").is_some());
    let broken = FULL.replace(
        "anonymous_introspect = true",
        "api_keys_file = \"/nonexistent/keys.toml\"",
    );
    assert!(error_text(&broken, &[]).starts_with("auth.api_keys_file"));
    Ok(())
}

#[test]
fn redis_backend_needs_a_url() {
    let text = FULL.replace("backend = \"memory\"", "backend = \"redis\"");
    assert!(error_text(&text, &[]).starts_with("store.redis_url"));
    let ok = error_text(
        &text,
        &[("INTROSPECTD_STORE__REDIS_URL", "redis://127.0.0.1:6379")],
    );
    assert_eq!(ok, "<accepted>");
}

/// `serve` opens the store with the URL as `validate` reads it: one that cannot be used
/// is a configuration error naming the key (exit 64), never shown, not a failed start.
#[test]
fn redis_urls_are_read_as_the_store_reads_them() {
    let text = FULL.replace("backend = \"memory\"", "backend = \"redis\"");
    for bad in [
        "redis://:pa55word@redis:notaport/0",
        "redis+sentinel://:pa55word@127.0.0.1:26379",
        "redis+sentinel://:pa55word@127.0.0.1/mymaster",
        "redis+sentinel://:pa55word@127.0.0.1:26379/mymaster/db",
        "postgres://:pa55word@db/0",
        "rediss://:pa55word@redis.example:6380/0#insecure",
    ] {
        let error = error_text(&text, &[("INTROSPECTD_STORE__REDIS_URL", bad)]);
        assert!(error.starts_with("store.redis_url"), "{bad}: {error}");
        assert!(!error.contains("pa55word"), "{error}");
    }
    for good in [
        "redis://127.0.0.1:6379/2",
        "rediss://:p%40ss@redis.example:6380/0",
        "unix:///run/redis.sock",
        "redis+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2:26379/mymaster/1",
    ] {
        let accepted = error_text(&text, &[("INTROSPECTD_STORE__REDIS_URL", good)]);
        assert_eq!(accepted, "<accepted>", "{good}");
    }
    let ca_without_tls = error_text(
        &text,
        &[
            ("INTROSPECTD_STORE__REDIS_URL", "redis://127.0.0.1:6379"),
            ("INTROSPECTD_STORE__REDIS_CA_FILE", "/etc/redis/ca.pem"),
        ],
    );
    assert!(
        ca_without_tls.starts_with("store.redis_ca_file"),
        "{ca_without_tls}"
    );
}

/// No configuration error shows a secret: not a URL's credentials or query, not the
/// line of a TOML syntax error, not a secret given in the environment.
#[test]
fn configuration_errors_show_no_secret() {
    let with_credentials = FULL.replace(
        "https://id.example.com/jwks.json",
        "http://svc:PASSWORDinURL@idp.internal/jwks?key=QUERYsecret",
    );
    let error = error_text(&with_credentials, &[]);
    assert!(error.starts_with("issuers[0].jwks_uri"), "{error}");
    assert!(error.contains("idp.internal"), "{error}");
    assert!(
        !error.contains("PASSWORDinURL") && !error.contains("QUERYsecret"),
        "{error}"
    );

    let unterminated = format!(
        "{}introspection_endpoint = \"https://id.example.com/introspect\"\nintrospection_client_id = \"c\"\nintrospection_client_secret = \"SUPERSECRET-0123\n",
        *FULL
    );
    for overrides in [&[][..], &[("INTROSPECTD_CACHE__MAX_ENTRIES", "5")][..]] {
        let error = error_text(&unterminated, overrides);
        assert!(!error.contains("SUPERSECRET"), "{error}");
        assert!(error.contains("line"), "{error}");
    }

    // A secret written as something else than a string is refused without its value,
    // from the file as from the environment.
    for (line, secret) in [
        ("introspection_client_secret = 31415926535", "31415926535"),
        (
            "introspection_client_secret = 98765432109876543210987",
            "98765432109876543210987",
        ),
        ("introspection_client_secret = 0x1234abcd", "305441741"),
    ] {
        let text = format!(
            "{}introspection_endpoint = \"https://id.example.com/introspect\"\nintrospection_client_id = \"c\"\n{line}\n",
            *FULL
        );
        for overrides in [&[][..], &[("INTROSPECTD_CACHE__MAX_ENTRIES", "5")][..]] {
            let error = error_text(&text, overrides);
            assert!(error.contains("introspection_client_secret"), "{error}");
            assert!(!error.contains(secret), "{error}");
            assert!(!error.contains("1234abcd"), "{error}");
        }
    }

    // Secrets and URLs in the environment are taken as they are, never as TOML.
    let opaque = format!(
        "{}introspection_endpoint = \"https://id.example.com/introspect\"\nintrospection_client_id = \"c\"\n",
        *FULL
    );
    for secret in ["8231947562019384756", "\"quoted\"", "1.5e3", "true"] {
        let config = load(
            &opaque,
            &[(
                "INTROSPECTD_ISSUERS__0__INTROSPECTION_CLIENT_SECRET",
                secret,
            )],
        );
        let kept = config.ok().and_then(|config| {
            config.issuers[0]
                .keys
                .opaque
                .as_ref()
                .and_then(|endpoint| endpoint.credentials.clone())
                .map(|(_, secret)| secret)
        });
        assert_eq!(kept.as_deref(), Some(secret));
    }
}

#[test]
fn limits_and_header_names_that_cannot_work_are_refused() {
    let error = error_text(
        &FULL,
        &[(
            "INTROSPECTD_SERVER__MAX_CONCURRENT_REQUESTS",
            "9223372036854775807",
        )],
    );
    assert!(
        error.starts_with("server.max_concurrent_requests"),
        "{error}"
    );
    for (var, key) in [
        ("INTROSPECTD_GATEWAY__TOKEN_HEADER", "gateway.token_header"),
        (
            "INTROSPECTD_GATEWAY__CLIENT_CERTIFICATE_HEADER",
            "gateway.client_certificate_header",
        ),
    ] {
        let error = error_text(&FULL, &[(var, "bad header")]);
        assert!(error.starts_with(key), "{error}");
    }
}

#[test]
fn hmac_algorithm_with_key_set_is_refused() {
    let text = FULL.replace("jwks_uri", "algorithms = [\"RS256\", \"HS256\"]\njwks_uri");
    assert!(error_text(&text, &[]).contains("issuers[0].algorithms"));
}

#[test]
fn asymmetric_algorithm_with_secret_is_refused() {
    let text = r#"
[[issuers]]
issuer = "https://id.example.com/"
audiences = ["api"]
algorithms = ["RS256"]
hmac_secret = "0123456789abcdef0123456789abcdef"
"#;
    assert!(error_text(text, &[]).contains("issuers[0].algorithms"));
}

#[test]
fn short_hmac_secret_is_refused() {
    let text = r#"
[[issuers]]
issuer = "https://id.example.com/"
audiences = ["api"]
algorithms = ["HS256"]
hmac_secret = "short"
"#;
    assert!(error_text(text, &[]).contains("issuers[0].hmac_secret"));
}

/// RFC 7518 section 3.2: an HMAC key at least as long as the hash.
#[test]
fn an_hmac_secret_is_as_long_as_its_algorithms_hash() {
    let issuer = |algorithm: &str, secret_bytes: usize| {
        format!(
            "[auth]\nanonymous_introspect = true\n[[issuers]]\nissuer = \"https://id.example.com/\"\naudiences = [\"api\"]\nalgorithms = [\"HS256\", \"{algorithm}\"]\nhmac_secret = \"{}\"\n",
            "s".repeat(secret_bytes)
        )
    };
    for (algorithm, bytes) in [("HS384", 48), ("HS512", 64)] {
        let short = error_text(&issuer(algorithm, bytes - 1), &[]);
        assert!(short.contains("issuers[0].hmac_secret"), "{short}");
        assert!(
            short.contains(&format!("{bytes} bytes for {algorithm}")),
            "{short}"
        );
        assert!(!short.contains("sss"), "the secret is not shown: {short}");
        assert_eq!(
            error_text(&issuer(algorithm, bytes), &[]),
            "<accepted>",
            "{algorithm}"
        );
    }
}

#[test]
fn two_key_sources_are_refused() {
    let text = FULL.replace("jwks_uri", "discovery = true\njwks_uri");
    assert!(error_text(&text, &[]).contains("more than one key source"));
}

#[test]
fn unknown_algorithm_is_named() {
    let text = FULL.replace("jwks_uri", "algorithms = [\"none\"]\njwks_uri");
    assert!(error_text(&text, &[]).contains("issuers[0].algorithms"));
}

#[test]
fn bad_address_is_named() {
    let text = error_text(&FULL, &[("INTROSPECTD_SERVER__HTTP_ADDR", "nowhere")]);
    assert!(text.starts_with("server.http_addr"), "{text}");
}

#[test]
fn duplicate_issuer_is_refused() {
    let text = format!("{BASE}{ISSUER}{ISSUER}");
    assert!(error_text(&text, &[]).contains("issuers[1].issuer"));
}

#[test]
fn refresh_interval_is_clamped() -> Result<(), ConfigError> {
    let policy = load(&FULL, &[])?.issuers[0].keys.refresh;
    assert_eq!(
        policy.interval_for(Some(Duration::from_secs(1))),
        policy.min_interval
    );
    assert_eq!(
        policy.interval_for(Some(Duration::from_secs(999_999))),
        policy.max_interval
    );
    assert_eq!(policy.interval_for(None), policy.default_interval);
    Ok(())
}

#[test]
fn example_configs_are_valid() -> Result<(), ConfigError> {
    for text in [
        include_str!("../../examples/introspectd.toml"),
        include_str!("../../examples/enrichment.toml"),
    ] {
        FileConfig::parse(text, &env(&[]))?.validate()?;
    }
    Ok(())
}

#[test]
fn introspection_endpoint_needs_both_credentials_or_none() -> Result<(), ConfigError> {
    let with = |extra: &str| {
        format!(
            "{BASE}{}",
            ISSUER.replace("jwks_uri", &format!("{extra}\njwks_uri"))
        )
    };
    let config = load(
        &with("introspection_endpoint = \"https://id.example.com/introspect\""),
        &[],
    )?;
    assert!(config.issuers[0].keys.opaque.is_some());
    let half = with(
        "introspection_endpoint = \"https://id.example.com/introspect\"\nintrospection_client_id = \"me\"",
    );
    assert!(error_text(&half, &[]).starts_with("issuers[0].introspection_client_id"));
    let not_url = with("introspection_endpoint = \"id.example.com\"");
    assert!(error_text(&not_url, &[]).starts_with("issuers[0].introspection_endpoint"));
    // The secret never shows in the configuration's debug output.
    let secret = with(
        "introspection_endpoint = \"https://id.example.com/i\"\nintrospection_client_id = \"me\"\nintrospection_client_secret = \"hunter2\"",
    );
    assert!(!format!("{:?}", load(&secret, &[])?).contains("hunter2"));
    Ok(())
}

#[test]
fn invalid_enrichers_are_named() {
    for (enricher, key) in [
        (
            "kind = \"mapping\"\nrules = [{from = \"a\"}]",
            "enrich[0].rules[0]",
        ),
        (
            "kind = \"mapping\"\nrules = [{from = \"a\", from_path = \"b\", to = \"c\"}]",
            "enrich[0].rules[0]",
        ),
        (
            "kind = \"mapping\"\nrules = [{strip_prefix = \"p\", to = \"c\"}]",
            "enrich[0].rules[0]",
        ),
        ("kind = \"remote\"\nurl = \"ftp://x\"", "enrich[0].url"),
        (
            "kind = \"remote\"\nurl = \"https://x\"\ntimeout_ms = 0",
            "enrich[0].timeout_ms",
        ),
        (
            "kind = \"static\"\nclaims = {deep = [[[[[[[[[[1]]]]]]]]]]}",
            "enrich[0].claims",
        ),
        // A static claim naming a registered claim is refused, not silently dropped.
        ("kind = \"static\"\nclaims = {exp = 1}", "enrich[0].claims"),
        ("kind = \"telepathy\"", "telepathy"),
        ("kind = \"static\"\nclaimz = {}", "claimz"),
    ] {
        let text = format!("{}\n[[issuers.enrich]]\n{enricher}\n", *FULL);
        let error = error_text(&text, &[]);
        assert!(error.contains(key), "{enricher}: {error}");
    }
}

#[test]
fn opaque_tokens_have_at_most_one_issuer_unless_chosen() {
    let endpoint = |iss: &str, prefixes: &str| {
        format!(
            "[[issuers]]\nissuer = {iss:?}\naudiences = [\"a\"]\njwks_uri = \"https://x.test/jwks\"\nintrospection_endpoint = \"https://x.test/introspect\"\n{prefixes}\n"
        )
    };
    let two_unprefixed = format!(
        "{BASE}{}{}",
        endpoint("https://a.test/", ""),
        endpoint("https://b.test/", "")
    );
    assert!(error_text(&two_unprefixed, &[]).starts_with("issuers[1].opaque_token_prefixes"));
    let opted_in = format!("[opaque]\ntry_unprefixed_in_order = true\n{two_unprefixed}");
    assert_eq!(error_text(&opted_in, &[]), "<accepted>");
    let prefixed = format!(
        "{BASE}{}{}",
        endpoint("https://a.test/", "opaque_token_prefixes = [\"a_\"]"),
        endpoint("https://b.test/", "")
    );
    assert_eq!(error_text(&prefixed, &[]), "<accepted>");
    let same_prefix = format!(
        "{BASE}{}{}",
        endpoint("https://a.test/", "opaque_token_prefixes = [\"p_\"]"),
        endpoint("https://b.test/", "opaque_token_prefixes = [\"p_\"]")
    );
    assert!(error_text(&same_prefix, &[]).contains("belongs to two issuers"));
}

#[test]
fn iat_is_required_by_default_for_strict_issuers_only() -> Result<(), ConfigError> {
    let strict = load(&FULL, &[])?;
    assert!(strict.issuers[0].keys.policy.require_iat);
    let compat = load(&FULL.replace("jwks_uri", "typ = \"compat\"\njwks_uri"), &[])?;
    assert!(!compat.issuers[0].keys.policy.require_iat);
    let opted_out = load(
        &FULL.replace("jwks_uri", "require_iat = false\njwks_uri"),
        &[],
    )?;
    assert!(!opted_out.issuers[0].keys.policy.require_iat);
    Ok(())
}

#[test]
fn tokens_go_over_plain_http_only_to_loopback_or_where_allowed() {
    let issuer = |url_key: &str, url: &str, extra: &str| {
        format!(
            "{BASE}[[issuers]]\nissuer = \"https://id.example.com/\"\naudiences = [\"a\"]\n{extra}\n{url_key} = {url:?}\n"
        )
    };
    let jwks = |url: &str, extra: &str| issuer("jwks_uri", url, extra);
    assert!(
        error_text(&jwks("http://id.example.com/jwks", ""), &[]).starts_with("issuers[0].jwks_uri")
    );
    assert_eq!(
        error_text(&jwks("http://127.0.0.1:9/jwks", ""), &[]),
        "<accepted>"
    );
    assert_eq!(
        error_text(
            &jwks("http://id.example.com/jwks", "allow_insecure_http = true"),
            &[]
        ),
        "<accepted>"
    );
    let endpoint = issuer(
        "introspection_endpoint",
        "http://id.example.com/introspect",
        "jwks_uri = \"https://id.example.com/jwks\"",
    );
    assert!(error_text(&endpoint, &[]).starts_with("issuers[0].introspection_endpoint"));
    let remote = format!(
        "{}[[issuers.enrich]]\nkind = \"remote\"\nurl = \"http://claims.internal/\"\n",
        jwks("https://id.example.com/jwks", "")
    );
    assert!(error_text(&remote, &[]).starts_with("issuers[0].enrich[0].url"));
}

/// Every default the README's configuration tables give is the code's: each row whose
/// default cell starts with a literal is compared with what a minimal file parses to
/// (computed defaults, like `require_iat` from `typ`, stay unset in the file and are
/// skipped; their own tests pin them).
#[test]
fn the_readme_gives_the_defaults_the_code_has() -> Result<(), Box<dyn std::error::Error>> {
    let readme = include_str!("../../README.md");
    let text = format!(
        "{}\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
         [answer_signing]\nissuer = \"https://answers.example\"\nkey_file = \"k.pem\"\n",
        ISSUER
    );
    let parsed = serde_json::to_value(FileConfig::parse(&text, &env(&[]))?)?;
    let mut checked = Vec::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, key, default, ..] = cells.as_slice() else {
            continue;
        };
        let Some(key) = key.strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
            continue;
        };
        let Some((section, name)) = key.split_once('.') else {
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let Some(literal) = default
            .strip_prefix('`')
            .and_then(|rest| rest.split_once('`'))
            .map(|(literal, _)| literal)
        else {
            continue;
        };
        let actual = match section.strip_suffix("[]") {
            Some(list) => &parsed[list][0][name],
            None => &parsed[section][name],
        };
        if actual.is_null() {
            continue;
        }
        let documented = serde_json::from_str(literal)
            .unwrap_or_else(|_| serde_json::Value::String(literal.to_owned()));
        assert_eq!(actual, &documented, "README default of {key}");
        checked.push(key);
    }
    assert!(
        checked.len() >= 50,
        "only {} rows read: {checked:?}",
        checked.len()
    );
    Ok(())
}
