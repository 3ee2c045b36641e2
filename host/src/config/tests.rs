//! Tests of the configuration: layering, defaults, validation, and the command line.

use super::*;
use clap::Parser;

/// The `serve` command line alone, as `main.rs` flattens it.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

fn file(text: &str) -> Settings {
    toml::from_str(text).unwrap()
}

fn resolve(settings: Settings) -> Result<ServeConfig, ConfigError> {
    ServeConfig::resolve(settings)
}

#[test]
fn inline_max_run_defaults_to_a_millisecond_and_is_bounded() {
    let config = resolve(Settings::default()).unwrap();
    assert_eq!(config.inline_max_run, Duration::from_millis(1));
    let config = resolve(file("inline_max_run_us = 0")).unwrap();
    assert!(config.inline_max_run.is_zero());
    let too_long = Settings {
        inline_max_run_us: Some(MAX_INLINE_MAX_RUN_US + 1),
        ..Settings::default()
    };
    let error = resolve(too_long).unwrap_err();
    assert!(error.to_string().contains("inline_max_run_us"), "{error}");
}

#[test]
fn concurrent_uploads_default_to_four_and_are_bounded() {
    let config = resolve(Settings::default()).unwrap();
    assert_eq!(
        config.max_concurrent_uploads,
        DEFAULT_MAX_CONCURRENT_UPLOADS
    );
    assert_eq!(DEFAULT_MAX_CONCURRENT_UPLOADS, 4);
    let config = resolve(file("max_concurrent_uploads = 2")).unwrap();
    assert_eq!(config.max_concurrent_uploads, 2);
    for bad in [0, MAX_CONCURRENT_UPLOADS + 1] {
        let flags = Settings {
            max_concurrent_uploads: Some(bad),
            ..Settings::default()
        };
        let error = resolve(flags).unwrap_err();
        assert!(
            error.to_string().contains("max_concurrent_uploads"),
            "{error}"
        );
    }
}

#[test]
fn flags_win_over_the_file_and_limits_are_checked() {
    let flags = Settings {
        max_upload_mib: Some(7),
        ..Settings::default()
    };
    let config =
        resolve(flags.over(file("listen = \"127.0.0.1:9000\"\nmax_upload_mib = 5"))).unwrap();
    assert_eq!(config.listen.port(), 9000);
    assert_eq!(config.max_upload_bytes, 7 << 20);
    let short = Settings {
        admin_token: Some("short".into()),
        ..Settings::default()
    };
    let error = resolve(short).unwrap_err();
    assert!(error.to_string().contains("at least 16"), "{error}");
    let error = toml::from_str::<Settings>("lisen = 1").unwrap_err();
    assert!(error.to_string().contains("unknown field"), "{error}");
}

#[test]
fn the_file_cannot_name_another_file_and_switches_add_up() {
    // `config` is a flag, not a key; a key no setting has is refused, not ignored.
    let error = toml::from_str::<Settings>("config = \"other.toml\"").unwrap_err();
    assert!(error.to_string().contains("unknown field"), "{error}");
    let on = file("fuel_metering = true\nplain_http = true");
    let merged = Settings::default().over(on);
    assert!(merged.fuel_metering && merged.plain_http);
    let flags = Settings {
        fuel_metering: true,
        ..Settings::default()
    };
    assert!(flags.over(file("fuel_metering = false")).fuel_metering);
}

#[test]
fn the_admin_token_comes_from_the_environment_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandserve.toml");
    std::fs::write(
        &path,
        "admin_token = \"file-token-0123456789\"\nmax_upload_mib = 3",
    )
    .unwrap();
    let flags = Settings {
        config: Some(path.clone()),
        ..Settings::default()
    };
    let config = ServeConfig::load(flags.clone(), None).unwrap();
    assert_eq!(config.admin_token.as_deref(), Some("file-token-0123456789"));
    assert_eq!(config.max_upload_bytes, 3 << 20);
    let config = ServeConfig::load(flags.clone(), Some(String::new())).unwrap();
    assert_eq!(config.admin_token.as_deref(), Some("file-token-0123456789"));
    let config = ServeConfig::load(flags, Some("env-token-0123456789".into())).unwrap();
    assert_eq!(config.admin_token.as_deref(), Some("env-token-0123456789"));
    std::fs::write(&path, "admin_tokn = \"x\"").unwrap();
    let flags = Settings {
        config: Some(path),
        ..Settings::default()
    };
    let error = ServeConfig::load(flags, None).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Parse { message, .. } if message.contains("admin_tokn")),
        "{error}"
    );
}

#[test]
fn every_key_is_a_flag_of_the_same_name_with_its_variable() {
    let cli = Cli::try_parse_from([
        "serve",
        "--listen",
        "127.0.0.1:1",
        "--max-upload-mib",
        "9",
        "--fuel-metering",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
        "--memory-budget-mib",
        "100",
    ])
    .unwrap();
    let s = cli.settings;
    assert_eq!(s.listen.map(|a| a.port()), Some(1));
    assert_eq!(s.max_upload_mib, Some(9));
    assert!(s.fuel_metering && !s.plain_http);
    assert_eq!(s.tls_key.as_deref(), Some(Path::new("k.pem")));
    assert_eq!(s.memory_budget_mib, Some(100));
    assert!(
        Cli::try_parse_from(["serve", "--admin-token", "x"]).is_err(),
        "the admin token is never a flag"
    );
    assert!(
        Cli::try_parse_from(["serve", "--tls-cert", "c.pem"]).is_err(),
        "a certificate needs its key"
    );
    use clap::CommandFactory;
    let command = Cli::command();
    let config_help = command
        .get_arguments()
        .find(|a| a.get_id() == "config")
        .and_then(|a| a.get_long_help().or(a.get_help()))
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(config_help.contains("admin_token"), "{config_help}");
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let long = arg.get_long().unwrap_or_default();
        assert_eq!(long.replace('-', "_"), id, "flag --{long}");
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        assert_eq!(
            env.as_deref(),
            Some(format!("SANDSERVE_{}", id.to_uppercase()).as_str()),
            "--{long} reads its environment variable"
        );
        if id != "config" {
            assert!(config_help.contains(id), "--config lists the key {id}");
            let key = format!("{id} = {}", sample(id));
            toml::from_str::<Settings>(&key).unwrap_or_else(|e| panic!("key {id}: {e}"));
        }
        assert!(arg.get_help().is_some(), "--{long} is documented");
    }
}

/// A TOML value of the right type for a key.
fn sample(key: &str) -> &'static str {
    match key {
        "listen" => "\"127.0.0.1:1\"",
        "fuel_metering" | "plain_http" | "public_metrics" | "blobs_allow_http" => "true",
        "log_format" => "\"json\"",
        "data_dir" | "engines_dir" | "tls_cert" | "tls_key" | "blobs" | "blobs_endpoint" => "\"x\"",
        "metadata" | "node_id" | "advertise_url" => "\"x\"",
        _ => "1",
    }
}

#[test]
fn plain_http_beyond_loopback_must_be_asked_for() {
    let error = resolve(file("listen = \"0.0.0.0:8080\"")).unwrap_err();
    assert!(error.to_string().contains("--tls-cert"), "{error}");
    assert!(resolve(file("listen = \"0.0.0.0:8080\"\nplain_http = true")).is_ok());
    assert!(resolve(file("tls_cert = \"c.pem\"")).is_err());
    assert!(resolve(file("header_read_timeout_secs = 0")).is_err());
}

#[test]
fn log_format_and_public_metrics_resolve() {
    let config = resolve(file("log_format = \"json\"\npublic_metrics = true")).unwrap();
    assert_eq!(config.log_format, super::LogFormat::Json);
    assert!(config.public_metrics);
    let config = resolve(file("")).unwrap();
    assert_eq!(config.log_format, super::LogFormat::Text);
    assert!(!config.public_metrics);
    assert!(toml::from_str::<Settings>("log_format = \"xml\"").is_err());
}
