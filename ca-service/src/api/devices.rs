//! `hallmark.v1.Devices`: the device registry.

use hallmark_proto::v1 as pb;
use pb::devices_server::Devices;
use tonic::{Request, Response, Status};

use super::auth::rpc_span;
use super::messages::device_message;
use super::{ApiState, invalid_name, store_status};
use crate::authority::profile::Role;
use crate::identity::DeviceId;
use crate::service::registry::DeviceRow;
use crate::store::{DeviceFilter, DeviceStatus};

pub use crate::service::registry::MAX_IMPORT_ROWS;

/// The service.
#[derive(Debug, Clone)]
pub struct DevicesService {
    state: ApiState,
}

impl DevicesService {
    /// A service over `state`.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

fn status_from(value: i32) -> Result<Option<DeviceStatus>, Status> {
    match pb::DeviceStatus::try_from(value) {
        Ok(pb::DeviceStatus::Unspecified) => Ok(None),
        Ok(pb::DeviceStatus::Active) => Ok(Some(DeviceStatus::Active)),
        Ok(pb::DeviceStatus::Suspended) => Ok(Some(DeviceStatus::Suspended)),
        Ok(pb::DeviceStatus::Decommissioned) => Ok(Some(DeviceStatus::Decommissioned)),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown device status value {value}"
        ))),
    }
}

fn row(r: pb::RegisterDeviceRequest) -> DeviceRow {
    DeviceRow {
        id: r.id,
        zone: r.zone,
        profile: r.profile,
        lot: r.lot,
        model: r.model,
        serial_number: r.serial_number,
        manufacturer: r.manufacturer,
    }
}

#[tonic::async_trait]
impl Devices for DevicesService {
    async fn register(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let span = rpc_span!("RegisterDevice", device = %request.get_ref().id);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let device = self
                    .state
                    .service
                    .register_device(&caller, row(req))
                    .await?;
                Ok(device_message(&device))
            })
            .await
    }

    async fn import(
        &self,
        request: Request<pb::ImportDevicesRequest>,
    ) -> Result<Response<pb::ImportDevicesResponse>, Status> {
        let span = rpc_span!("ImportDevices", rows = request.get_ref().devices.len());
        self.state
            .authenticated(span, request, |caller, req| async move {
                let rows = req.devices.into_iter().map(row).collect();
                let outcome = self.state.service.import_devices(&caller, rows).await?;
                Ok(pb::ImportDevicesResponse {
                    imported: outcome.imported as u32,
                    errors: outcome
                        .errors
                        .into_iter()
                        .map(|(i, message)| pb::RowError {
                            index: i as u32,
                            message,
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn get(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let span = rpc_span!("GetDevice", device = %request.get_ref().id);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let id = req.id;
                DeviceId::parse(&id).map_err(invalid_name)?;
                match self
                    .state
                    .service
                    .reads()
                    .device(&id)
                    .await
                    .map_err(store_status)?
                {
                    Some(d) if caller.may_read(&d.id, &d.profile, &d.zone) => {
                        Ok(device_message(&d))
                    }
                    Some(_) => Err(Status::permission_denied(format!(
                        "{} may not read device {id}",
                        caller.name
                    ))),
                    None => Err(Status::not_found(format!("device {id} is not registered"))),
                }
            })
            .await
    }

    async fn list(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let span = rpc_span!("ListDevices");
        self.state
            .authenticated(span, request, |caller, req| async move {
                caller.require(&[Role::Admin, Role::BrokerAgent], "ListDevices")?;
                let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
                let filter = DeviceFilter {
                    zone: nonempty(&req.zone),
                    profile: nonempty(&req.profile),
                    lot: nonempty(&req.lot),
                    status: status_from(req.status)?,
                };
                let limit = super::page_size(req.page_size)?;
                if !req.page_token.is_empty() {
                    DeviceId::parse(&req.page_token).map_err(|_| {
                        Status::invalid_argument(
                            "page_token is not one this server returned; start again without it",
                        )
                    })?;
                }
                let (items, next) = self
                    .state
                    .service
                    .reads()
                    .list_devices(&filter, &req.page_token, limit)
                    .await
                    .map_err(store_status)?;
                Ok(pb::ListDevicesResponse {
                    devices: items.iter().map(device_message).collect(),
                    next_page_token: next.unwrap_or_default(),
                })
            })
            .await
    }

    async fn set_status(
        &self,
        request: Request<pb::SetDeviceStatusRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let span = rpc_span!("SetDeviceStatus", device = %request.get_ref().id);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let status = status_from(req.status);
                // An unknown status value is refused only after the caller's rights and the
                // id were checked, as a missing one is.
                let d = match status {
                    Ok(status) => {
                        self.state
                            .service
                            .set_device_status(&caller, &req.id, status)
                            .await?
                    }
                    Err(refusal) => {
                        caller.require(&[Role::Admin], "SetStatus")?;
                        DeviceId::parse(&req.id).map_err(invalid_name)?;
                        return Err(refusal);
                    }
                };
                Ok(device_message(&d))
            })
            .await
    }

    async fn readmit(
        &self,
        request: Request<pb::ReadmitDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let span = rpc_span!("ReadmitDevice", device = %request.get_ref().id);
        self.state
            .authenticated(span, request, |caller, req| async move {
                let d = self.state.service.readmit_device(&caller, &req.id).await?;
                Ok(device_message(&d))
            })
            .await
    }
}
