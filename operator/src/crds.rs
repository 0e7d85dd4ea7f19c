//! Brings the cluster's CRDs to what this operator's API needs, in the shape the API server
//! supports (`api::crds`): Helm installs the base shape from the chart's `crds/` folder (and
//! never updates it), the leader applies the right one — with CEL rules on Kubernetes 1.25+
//! — by server-side apply at every start, so `helm upgrade` carries CRD changes too. RBAC
//! limits the operator to `get`/`patch` on these two CRDs by name.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    api::{Patch, PatchParams},
    Api, Client, ResourceExt,
};

use crate::context::MANAGER;

/// Applies both CRDs in the shape the API server takes. A CRD that does not exist or may not
/// be patched is reported and left alone (the operator still runs on what is there).
pub async fn apply(client: &Client) -> anyhow::Result<()> {
    let version = client.apiserver_version().await?;
    let crds = api::crds::for_server(&version.major, &version.minor);
    let shape = api::crds::shape_for(&version.major, &version.minor);
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.name_any();
        // Apply, never create: an absent CRD means it was not installed with the chart.
        match api.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::error!(crd = %name, "CRD not installed: install it with the chart (crds/) or deploy/01-crds.yaml");
                continue;
            }
            Err(e) => {
                tracing::warn!(crd = %name, error = %e, "cannot read the CRD; leaving it as it is");
                continue;
            }
        }
        match api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(crd = %name, ?shape, server = %version.git_version, "CRD applied")
            }
            Err(e) => {
                tracing::warn!(crd = %name, error = %e, "applying the CRD failed; leaving it as it is")
            }
        }
    }
    Ok(())
}
