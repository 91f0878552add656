//! The SASL credentials a kafka `client` or `proxy` authenticates to the brokers with, from
//! its options: the 1.x `sasl` form or the 2.x `authorization` form.

use zilla_engine::{BuildContext, BuildError};

use crate::config::{SaslMechanism, SaslOptions};
use crate::wire;

/// SASL credentials from `authorization`'s one guard: its configured identity and secret fill
/// the `{identity}` and `{credentials}` templates of `username` and `password`.
fn sasl_from_guard(
    context: &BuildContext<'_>,
    authorization: &std::collections::BTreeMap<String, crate::config::KafkaAuthorization>,
) -> Result<SaslOptions, BuildError> {
    let mut entries = authorization.iter();
    let (Some((name, entry)), None) = (entries.next(), entries.next()) else {
        return Err(BuildError::at(
            "options.authorization",
            "name exactly one guard",
        ));
    };
    let path = format!("options.authorization.{name}");
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
    Ok(SaslOptions {
        mechanism: entry.credentials.mechanism,
        username: fill(&entry.credentials.username, "username")?,
        password: fill(&entry.credentials.password, "password")?,
    })
}

/// The SASL credentials a connection to the brokers authenticates with: the 1.x `sasl` form or
/// the 2.x `authorization` form (one guard's secrets), never both; scram-sha-1 is refused.
pub(crate) fn sasl_config(
    context: &BuildContext<'_>,
    sasl: Option<&SaslOptions>,
    authorization: Option<&std::collections::BTreeMap<String, crate::config::KafkaAuthorization>>,
) -> Result<Option<wire::SaslConfig>, BuildError> {
    let sasl_options = match (sasl, authorization) {
        (Some(_), Some(_)) => {
            return Err(BuildError::at(
                "options.authorization",
                "give SASL credentials as `sasl` or as `authorization`, not both",
            ));
        }
        (Some(sasl), None) => Some(sasl.clone()),
        (None, Some(authorization)) => Some(sasl_from_guard(context, authorization)?),
        (None, None) => None,
    };
    if sasl_options
        .as_ref()
        .is_some_and(|sasl| sasl.mechanism == SaslMechanism::ScramSha1)
    {
        let path = if sasl.is_some() {
            "options.sasl.mechanism".to_owned()
        } else {
            let guard = authorization
                .into_iter()
                .flatten()
                .next()
                .map(|(g, _)| g.as_str());
            format!(
                "options.authorization.{}.credentials.mechanism",
                guard.unwrap_or_default()
            )
        };
        return Err(BuildError::at(
            path,
            "scram-sha-1 is not supported; use scram-sha-256 or scram-sha-512",
        ));
    }
    Ok(sasl_options.map(|sasl| wire::SaslConfig {
        mechanism: match sasl.mechanism {
            SaslMechanism::Plain => wire::SaslMechanism::Plain,
            SaslMechanism::ScramSha256 => wire::SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512 | SaslMechanism::ScramSha1 => {
                wire::SaslMechanism::ScramSha512
            }
        },
        username: sasl.username,
        password: sasl.password,
    }))
}
