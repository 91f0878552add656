//! Zilla's route rules, once for every binding: routes are tried in order and the first match
//! wins; a route matches when any of its `when` entries matches (conditions inside one entry
//! are ANDed by the binding's matcher) and every `guarded` guard's session holds the listed
//! roles; the binding-level `exit` is a final route that always matches.

use serde::de::DeserializeOwned;

use crate::components::BuildError;
use crate::config::model::BindingConfig;
use crate::guard::{Authorization, qualified};

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route<C, W, E> {
    /// Conditions, ORed; empty always matches.
    pub when: Vec<C>,
    /// Qualified guard name → roles that must all be held.
    pub guarded: Vec<(String, Vec<String>)>,
    /// The exit's name as written.
    pub exit_name: String,
    /// The exit's handler.
    pub exit: E,
    /// Type-specific parameters.
    pub with: Option<W>,
}

/// The ordered routes of one binding.
#[derive(Debug, Clone)]
pub struct Routes<C, W, E> {
    routes: Vec<Route<C, W, E>>,
}

/// The raw config of one route, as written (type-specific parts still JSON).
pub use crate::config::model::RouteConfig;

impl<C, W, E> Routes<C, W, E> {
    /// Compiles the routes of `config`; `exit` resolves exit names to handlers and `compile`
    /// turns a raw `when` entry into a matcher.
    pub fn build<Raw: DeserializeOwned>(
        config: &BindingConfig,
        exit: impl Fn(&str) -> Result<E, BuildError>,
        compile: impl Fn(Raw) -> Result<C, String>,
    ) -> Result<Self, BuildError>
    where
        W: DeserializeOwned,
    {
        let namespace = config.namespace.clone();
        let mut routes = Vec::with_capacity(config.routes.len() + 1);
        for (index, route) in config.routes.iter().enumerate() {
            let mut when = Vec::with_capacity(route.when.len());
            for (entry, value) in route.when.iter().enumerate() {
                let raw: Raw = serde_json::from_value(value.clone()).map_err(|error| {
                    BuildError::at(format!("routes[{index}].when[{entry}]"), error.to_string())
                })?;
                when.push(compile(raw).map_err(|message| {
                    BuildError::at(format!("routes[{index}].when[{entry}]"), message)
                })?);
            }
            let with = match &route.with {
                None => None,
                Some(value) => Some(serde_json::from_value(value.clone()).map_err(|error| {
                    BuildError::at(format!("routes[{index}].with"), error.to_string())
                })?),
            };
            let handler = exit(&route.exit).map_err(|mut error| {
                error.path = format!("routes[{index}].exit");
                error
            })?;
            routes.push(Route {
                when,
                guarded: route
                    .guarded
                    .iter()
                    .map(|(guard, roles)| (qualified(&namespace, guard), roles.clone()))
                    .collect(),
                exit_name: route.exit.clone(),
                exit: handler,
                with,
            });
        }
        if let Some(default) = &config.exit {
            routes.push(Route {
                when: Vec::new(),
                guarded: Vec::new(),
                exit_name: default.clone(),
                exit: exit(default)?,
                with: None,
            });
        }
        Ok(Self { routes })
    }

    /// The routes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route<C, W, E>> {
        self.routes.iter()
    }

    /// Whether there is no route at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The first route whose conditions match and whose guards authorize.
    pub fn resolve(
        &self,
        authorization: Option<&Authorization>,
        matches: impl Fn(&C) -> bool,
    ) -> Option<&Route<C, W, E>> {
        self.resolve_with(authorization, |condition| matches(condition).then_some(()))
            .map(|(route, ())| route)
    }

    /// Like [`Self::resolve`], keeping what the matching condition produced (e.g. captures).
    /// A route with no `when` produces `M::default()`.
    pub fn resolve_with<M: Default>(
        &self,
        authorization: Option<&Authorization>,
        mut matches: impl FnMut(&C) -> Option<M>,
    ) -> Option<(&Route<C, W, E>, M)> {
        self.routes.iter().find_map(|route| {
            let produced = if route.when.is_empty() {
                Some(M::default())
            } else {
                route.when.iter().find_map(&mut matches)
            }?;
            route.authorized(authorization).then_some((route, produced))
        })
    }
}

impl<C, W, E> Route<C, W, E> {
    /// Whether `authorization` holds every role this route's guards ask for.
    pub fn authorized(&self, authorization: Option<&Authorization>) -> bool {
        self.guarded.iter().all(|(guard, roles)| {
            authorization
                .and_then(|authorization| authorization.session(guard))
                .is_some_and(|session| session.verify(roles))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{BindingKind, Origin};
    use serde_json::json;

    fn config(routes: Vec<(Vec<serde_json::Value>, &str)>, exit: Option<&str>) -> BindingConfig {
        BindingConfig {
            type_name: "tcp".into(),
            kind: BindingKind::Server,
            entry: None,
            vault: None,
            catalog: None,
            options: None,
            exit: exit.map(str::to_owned),
            routes: routes
                .into_iter()
                .map(|(when, exit)| RouteConfig {
                    when,
                    guarded: Vec::new(),
                    exit: exit.into(),
                    with: None,
                    origin: Origin::default(),
                })
                .collect(),
            telemetry_metrics: Vec::new(),
            telemetry_attributes: Vec::new(),
            json: json!({}),
            origin: Origin::default(),
            namespace: "test".into(),
        }
    }

    #[derive(serde::Deserialize)]
    struct When {
        port: Option<u16>,
        host: Option<String>,
    }

    #[test]
    fn first_match_wins_or_across_entries_and_within() {
        let config = config(
            vec![
                (
                    vec![json!({"port": 1, "host": "a"}), json!({"port": 2})],
                    "first",
                ),
                (vec![json!({"port": 1})], "second"),
            ],
            Some("fallback"),
        );
        let routes: Routes<When, (), String> =
            Routes::build(&config, |exit| Ok(exit.to_owned()), Ok).unwrap();
        let pick = |port: u16, host: &str| {
            routes
                .resolve(None, |when| {
                    when.port.is_none_or(|p| p == port)
                        && when.host.as_deref().is_none_or(|h| h == host)
                })
                .map(|route| route.exit.clone())
        };
        assert_eq!(pick(1, "a").as_deref(), Some("first"));
        assert_eq!(pick(2, "z").as_deref(), Some("first"));
        assert_eq!(pick(1, "z").as_deref(), Some("second"));
        assert_eq!(pick(3, "z").as_deref(), Some("fallback"));
    }

    #[test]
    fn no_exit_means_no_match() {
        let config = config(vec![(vec![json!({"port": 1})], "only")], None);
        let routes: Routes<When, (), String> =
            Routes::build(&config, |exit| Ok(exit.to_owned()), Ok).unwrap();
        assert!(routes.resolve(None, |when| when.port == Some(2)).is_none());
    }

    #[test]
    fn guarded_route_needs_a_session() {
        let mut config = config(vec![(vec![], "guarded")], Some("open"));
        config.routes[0].guarded = vec![("jwt0".into(), vec!["read".into()])];
        let routes: Routes<When, (), String> =
            Routes::build(&config, |exit| Ok(exit.to_owned()), Ok).unwrap();
        let route = routes.resolve(None, |_| true).unwrap();
        assert_eq!(route.exit, "open");
    }
}
