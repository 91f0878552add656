//! The SASL credentials a kafka `client` or `proxy` authenticates to the brokers with, from
//! its options: the 1.x `sasl` form or the 2.x `authorization` form.

use zilla_engine::{BuildContext, BuildError};

use crate::config::{KafkaAuthorization, KafkaCredentials, SaslMechanism, SaslOptions};
use crate::wire;

/// SASL credentials from `authorization`'s one guard: its configured identity and secret fill
/// the `{identity}` and `{credentials}` templates of `username`, `password` and `token`.
fn sasl_from_guard(
    context: &BuildContext<'_>,
    authorization: &std::collections::BTreeMap<String, KafkaAuthorization>,
) -> Result<wire::SaslConfig, BuildError> {
    let mut entries = authorization.iter();
    let (Some((name, entry)), None) = (entries.next(), entries.next()) else {
        return Err(BuildError::at(
            "options.authorization",
            "name exactly one guard",
        ));
    };
    let path = format!("options.authorization.{name}");
    let credentials = &entry.credentials;
    // The keys must fit the mechanism before the guard is asked for anything.
    let shape = CredentialsShape::of(credentials, &format!("{path}.credentials"))?;
    let (_, guard) = context.guard(name).map_err(|mut error| {
        error.path = path.clone();
        error
    })?;
    let Some(session) = guard.configured() else {
        return Err(BuildError::at(
            path,
            format!("guard `{name}` holds no credentials of its own; use an `inline` guard"),
        ));
    };
    let fill = |template: &str, field: &str| -> Result<String, BuildError> {
        let mut text = template.to_owned();
        for (placeholder, value) in [
            ("{identity}", session.identity().map(str::to_owned)),
            ("{credentials}", session.credentials()),
        ] {
            if text.contains(placeholder) {
                let Some(value) = value else {
                    return Err(BuildError::at(
                        format!("{path}.credentials.{field}"),
                        format!(
                            "guard `{name}` has no {}",
                            &placeholder[1..placeholder.len() - 1]
                        ),
                    ));
                };
                text = text.replace(placeholder, &value);
            }
        }
        Ok(text)
    };
    match shape {
        CredentialsShape::Password { username, password } => password_config(
            credentials.mechanism,
            fill(username, "username")?,
            fill(password, "password")?,
            &format!("{path}.credentials.mechanism"),
        ),
        CredentialsShape::Token(token) => {
            let token = fill(token, "token")?;
            wire::check_bearer_token(&token)
                .map_err(|why| BuildError::at(format!("{path}.credentials.token"), why))?;
            Ok(wire::SaslConfig {
                mechanism: wire::SaslMechanism::OauthBearer,
                username: String::new(),
                password: token,
            })
        }
    }
}

/// The keys `authorization` credentials give, checked against their mechanism.
enum CredentialsShape<'a> {
    /// `plain` and SCRAM: a user and a password.
    Password {
        username: &'a str,
        password: &'a str,
    },
    /// `oauthbearer`: a bearer token.
    Token(&'a str),
}

impl<'a> CredentialsShape<'a> {
    fn of(credentials: &'a KafkaCredentials, path: &str) -> Result<Self, BuildError> {
        let given = |key: &str, value: &Option<String>| value.as_ref().map(|_| key.to_owned());
        match credentials.mechanism {
            SaslMechanism::OauthBearer => {
                if let Some(key) = given("username", &credentials.username)
                    .or_else(|| given("password", &credentials.password))
                {
                    return Err(BuildError::at(
                        format!("{path}.{key}"),
                        "mechanism oauthbearer takes a `token`, not a username or password",
                    ));
                }
                let token = credentials.token.as_deref().ok_or_else(|| {
                    BuildError::at(
                        format!("{path}.token"),
                        "mechanism oauthbearer needs a `token`",
                    )
                })?;
                Ok(Self::Token(token))
            }
            _ => {
                if credentials.token.is_some() {
                    return Err(BuildError::at(
                        format!("{path}.token"),
                        "a `token` is for mechanism oauthbearer only; this mechanism takes `username` and `password`",
                    ));
                }
                let required = |key: &str, value: &'a Option<String>| {
                    value.as_deref().ok_or_else(|| {
                        BuildError::at(
                            format!("{path}.{key}"),
                            "this mechanism needs a `username` and a `password`",
                        )
                    })
                };
                Ok(Self::Password {
                    username: required("username", &credentials.username)?,
                    password: required("password", &credentials.password)?,
                })
            }
        }
    }
}

/// A user-and-password mechanism's credentials; scram-sha-1 is refused (no broker enables it
/// alongside the SHA-2 ones, and it is weak).
fn password_config(
    mechanism: SaslMechanism,
    username: String,
    password: String,
    path: &str,
) -> Result<wire::SaslConfig, BuildError> {
    let mechanism = match mechanism {
        SaslMechanism::Plain => wire::SaslMechanism::Plain,
        SaslMechanism::ScramSha256 => wire::SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512 => wire::SaslMechanism::ScramSha512,
        SaslMechanism::ScramSha1 => {
            return Err(BuildError::at(
                path,
                "scram-sha-1 is not supported; use scram-sha-256 or scram-sha-512",
            ));
        }
        SaslMechanism::OauthBearer => {
            return Err(BuildError::at(
                path,
                "oauthbearer takes a `token`: give it in `authorization` credentials",
            ));
        }
    };
    Ok(wire::SaslConfig {
        mechanism,
        username,
        password,
    })
}

/// The SASL credentials a connection to the brokers authenticates with: the 1.x `sasl` form or
/// the 2.x `authorization` form (one guard's secrets), never both; scram-sha-1 is refused.
pub(crate) fn sasl_config(
    context: &BuildContext<'_>,
    sasl: Option<&SaslOptions>,
    authorization: Option<&std::collections::BTreeMap<String, KafkaAuthorization>>,
) -> Result<Option<wire::SaslConfig>, BuildError> {
    match (sasl, authorization) {
        (Some(_), Some(_)) => Err(BuildError::at(
            "options.authorization",
            "give SASL credentials as `sasl` or as `authorization`, not both",
        )),
        (Some(sasl), None) => password_config(
            sasl.mechanism,
            sasl.username.clone(),
            sasl.password.clone(),
            "options.sasl.mechanism",
        )
        .map(Some),
        (None, Some(authorization)) => sasl_from_guard(context, authorization).map(Some),
        (None, None) => Ok(None),
    }
}
