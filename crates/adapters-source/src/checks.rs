//! What the chosen build options need beyond tools, checked in preflight: the policy's word on
//! every download an option makes during the build, and the headers an option's
//! `find_package` needs. Both fail before anything is fetched or configured.

use std::path::{Path, PathBuf};

use provisioner_core::packages::tool_package;
use provisioner_core::{Action, BuildFetch, Error, HeaderRequirement, ManagerKind, Policy, Result};

use crate::host::HostFacts;

/// Asks the policy about each download the options will make (`--offline`, the allowed
/// hosts, plain http); a refusal names the option that makes it.
pub fn check_fetches(policy: &dyn Policy, fetches: &[BuildFetch]) -> Result<()> {
    for fetch in fetches {
        policy
            .check(&Action::Download {
                url: fetch.url.clone(),
                allowed_by_config: None,
            })
            .map_err(|error| match error {
                Error::PolicyDenied { action, hint } => Error::PolicyDenied {
                    action: format!(
                        "{action} (the build downloads it because -D{}=ON)",
                        fetch.option
                    ),
                    hint: Some(match hint {
                        Some(hint) => format!(
                            "{hint}; or turn the option off: -D{}=OFF in provisioning.source.build.cmake_flags",
                            fetch.option
                        ),
                        None => format!(
                            "turn the option off: -D{}=OFF in provisioning.source.build.cmake_flags",
                            fetch.option
                        ),
                    }),
                },
                other => other,
            })?;
    }
    Ok(())
}

/// The first header of `headers` found in none of `dirs`, as an error whose hint installs it.
pub fn check_headers(
    headers: &[HeaderRequirement],
    dirs: &[PathBuf],
    host: &HostFacts,
) -> Result<()> {
    for requirement in headers {
        let found = dirs
            .iter()
            .any(|dir| Path::new(dir).join(&requirement.header).is_file());
        if found {
            continue;
        }
        let install = tool_package(&requirement.header, host.distro)
            .zip(ManagerKind::for_distro(host.distro))
            .map(|(package, manager)| manager.install_command(&[package.as_str()], host.root))
            .unwrap_or_else(|| {
                format!(
                    "install the development package that provides {}",
                    requirement.header
                )
            });
        return Err(Error::MissingSetup {
            what: format!(
                "the header {} (searched {})",
                requirement.header,
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            purpose: requirement.purpose.clone(),
            hint: Some(format!(
                "{install}, or leave the option off (the provisioner stages models itself)"
            )),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_core::{Distro, MockPolicy};

    fn curl() -> HeaderRequirement {
        HeaderRequirement {
            header: "curl/curl.h".to_string(),
            purpose: "build with -DLLAMA_CURL=ON".to_string(),
        }
    }

    #[test]
    fn a_missing_header_names_the_package_that_provides_it() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostFacts {
            distro: Distro::Debian,
            ..HostFacts::default()
        };
        let error = check_headers(&[curl()], &[dir.path().to_path_buf()], &host).unwrap_err();
        assert_eq!(error.code().exit_code(), 5, "{error:?}");
        assert!(error.to_string().contains("curl/curl.h"), "{error}");
        assert_eq!(
            error.hint(),
            Some(
                "sudo apt-get install -y libcurl4-openssl-dev, or leave the option off (the provisioner stages models itself)"
            )
        );
        std::fs::create_dir_all(dir.path().join("curl")).unwrap();
        std::fs::write(dir.path().join("curl/curl.h"), "").unwrap();
        assert!(check_headers(&[curl()], &[dir.path().to_path_buf()], &host).is_ok());
    }

    #[test]
    fn a_refused_fetch_names_the_option() {
        let mut policy = MockPolicy::new();
        policy.expect_check().returning(|action| match action {
            Action::Download { url, .. } => Err(Error::PolicyDenied {
                action: format!("download {}", url.redacted()),
                hint: Some("drop --offline".to_string()),
            }),
            _ => Ok(()),
        });
        let fetch = BuildFetch {
            option: "LLAMA_LLGUIDANCE".to_string(),
            url: "https://github.com/guidance-ai/llguidance".parse().unwrap(),
        };
        let error = check_fetches(&policy, &[fetch]).unwrap_err();
        assert_eq!(error.code().exit_code(), 9);
        let text = error.to_string();
        assert!(
            text.contains("https://github.com/guidance-ai/llguidance")
                && text.contains("-DLLAMA_LLGUIDANCE=ON"),
            "{text}"
        );
        assert!(
            error
                .hint()
                .unwrap()
                .contains("-DLLAMA_LLGUIDANCE=OFF in provisioning.source.build.cmake_flags")
        );
    }
}
