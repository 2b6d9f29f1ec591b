//! `hallmark.v1.Devices`: the device registry.

use hallmark_proto::v1 as pb;
use pb::devices_server::Devices;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::Caller;
use super::{ApiState, invalid_name, operators, store_status};
use crate::authority::profile::Role;
use crate::identity::{DeviceId, validate_name};
use crate::store::{DeviceFilter, DeviceRecord, DeviceStatus, NewDevice, WriteOp, WriteOutput};

/// Most rows one `Import` call takes.
pub const MAX_IMPORT_ROWS: usize = 1000;
const MAX_FREE_TEXT: usize = 128;

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

/// Wire form of a registry entry.
pub fn device_message(d: &DeviceRecord) -> pb::Device {
    pb::Device {
        id: d.id.clone(),
        zone: d.zone.clone(),
        profile: d.profile.clone(),
        lot: d.lot.clone().unwrap_or_default(),
        model: d.model.clone().unwrap_or_default(),
        serial_number: d.serial_number.clone().unwrap_or_default(),
        manufacturer: d.manufacturer.clone().unwrap_or_default(),
        status: status_message(d.status) as i32,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

fn status_message(s: DeviceStatus) -> pb::DeviceStatus {
    match s {
        DeviceStatus::Active => pb::DeviceStatus::Active,
        DeviceStatus::Suspended => pb::DeviceStatus::Suspended,
        DeviceStatus::Decommissioned => pb::DeviceStatus::Decommissioned,
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

fn free_text(field: &str, value: &str) -> Result<Option<String>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_FREE_TEXT || v.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{field} `{}` must be at most {MAX_FREE_TEXT} printable characters",
            v.escape_default()
        ));
    }
    Ok(Some(v.to_owned()))
}

impl DevicesService {
    /// Validates a registration row against the grammar, the profiles and the caller's scope.
    fn check_row(
        &self,
        caller: &Caller,
        r: &pb::RegisterDeviceRequest,
    ) -> Result<NewDevice, String> {
        DeviceId::parse(&r.id).map_err(|e| e.to_string())?;
        self.state
            .host_names
            .check_device_id(&r.id)
            .map_err(|e| e.to_string())?;
        if r.zone.is_empty() {
            return Err(format!("device {}: zone is missing", r.id));
        }
        validate_name("zone", &r.zone).map_err(|e| e.to_string())?;
        match self.state.profiles.get(&r.profile) {
            Some(p) if p.role == Role::Device => {}
            Some(_) => {
                return Err(format!(
                    "profile {} is not a device profile; operator credentials are made with `hallmark credential create`",
                    r.profile
                ));
            }
            None if r.profile.is_empty() => {
                return Err(format!("device {}: profile is missing", r.id));
            }
            None => return Err(format!("unknown profile `{}`", r.profile.escape_default())),
        }
        caller.require_scope("register", &r.profile, &r.zone)?;
        let lot = if r.lot.is_empty() {
            None
        } else {
            validate_name("lot", &r.lot).map_err(|e| e.to_string())?;
            Some(r.lot.clone())
        };
        let manufacturer = if r.manufacturer.is_empty() {
            None
        } else {
            validate_name("manufacturer", &r.manufacturer).map_err(|e| e.to_string())?;
            Some(r.manufacturer.clone())
        };
        Ok(NewDevice {
            manufacturer,
            id: r.id.clone(),
            zone: r.zone.clone(),
            profile: r.profile.clone(),
            lot,
            model: free_text("model", &r.model)?,
            serial_number: free_text("serial number", &r.serial_number)?,
        })
    }

    async fn register_rows(
        &self,
        caller: &Caller,
        devices: Vec<NewDevice>,
    ) -> Result<(usize, Vec<(usize, String)>), Status> {
        let out = self
            .state
            .store
            .write(WriteOp::RegisterDevices {
                devices,
                at: self.state.authority.clock().now(),
                actor: caller.actor(),
            })
            .await
            .map_err(store_status)?;
        match out {
            WriteOutput::Registered {
                registered,
                rejected,
            } => Ok((registered, rejected)),
            other => Err(Status::internal(format!(
                "unexpected store answer {other:?}"
            ))),
        }
    }
}

#[tonic::async_trait]
impl Devices for DevicesService {
    async fn register(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let span = tracing::info_span!("RegisterDevice", device = %request.get_ref().id);
        async move {
            let caller = self.state.auth.caller(&request).await?;
            caller.require(&[Role::Admin, Role::Provisioner], "Register")?;
            let row = request.into_inner();
            let device = self.check_row(&caller, &row).map_err(|m| {
                if m.starts_with("provisioner ") {
                    Status::permission_denied(m)
                } else {
                    Status::invalid_argument(m)
                }
            })?;
            let (_, rejected) = self.register_rows(&caller, vec![device]).await?;
            if let Some((_, reason)) = rejected.into_iter().next() {
                return Err(Status::already_exists(reason));
            }
            let stored = self
                .state
                .store
                .device(&row.id)
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::internal("registered device not found"))?;
            Ok(Response::new(device_message(&stored)))
        }
        .instrument(span)
        .await
    }

    async fn import(
        &self,
        request: Request<pb::ImportDevicesRequest>,
    ) -> Result<Response<pb::ImportDevicesResponse>, Status> {
        let span = tracing::info_span!("ImportDevices", rows = request.get_ref().devices.len());
        async move {
            let caller = self.state.auth.caller(&request).await?;
            caller.require(&[Role::Admin, Role::Provisioner], "Import")?;
            let rows = request.into_inner().devices;
            if rows.len() > MAX_IMPORT_ROWS {
                return Err(Status::invalid_argument(format!(
                    "{} rows in one call; send at most {MAX_IMPORT_ROWS} per call",
                    rows.len()
                )));
            }
            let mut errors = Vec::new();
            let mut valid = Vec::new();
            let mut index_of = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                match self.check_row(&caller, row) {
                    Ok(d) => {
                        index_of.push(i);
                        valid.push(d);
                    }
                    Err(message) => errors.push(pb::RowError {
                        index: i as u32,
                        message,
                    }),
                }
            }
            let (imported, rejected) = self.register_rows(&caller, valid).await?;
            for (i, message) in rejected {
                errors.push(pb::RowError {
                    index: index_of[i] as u32,
                    message,
                });
            }
            errors.sort_by_key(|e| e.index);
            Ok(Response::new(pb::ImportDevicesResponse {
                imported: imported as u32,
                errors,
            }))
        }
        .instrument(span)
        .await
    }

    async fn get(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let span = tracing::info_span!("GetDevice", device = %request.get_ref().id);
        async move {
            let caller = self.state.auth.caller(&request).await?;
            let id = request.into_inner().id;
            DeviceId::parse(&id).map_err(invalid_name)?;
            match self.state.store.device(&id).await.map_err(store_status)? {
                Some(d) if caller.may_read(&d.id, &d.profile, &d.zone) => {
                    Ok(Response::new(device_message(&d)))
                }
                Some(_) => Err(Status::permission_denied(format!(
                    "{} may not read device {id}",
                    caller.name
                ))),
                None => Err(Status::not_found(format!("device {id} is not registered"))),
            }
        }
        .instrument(span)
        .await
    }

    async fn list(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let span = tracing::info_span!("ListDevices");
        async move {
            let caller = self.state.auth.caller(&request).await?;
            caller.require(&[Role::Admin, Role::BrokerAgent], "ListDevices")?;
            let req = request.into_inner();
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
                .store
                .list_devices(&filter, &req.page_token, limit)
                .await
                .map_err(store_status)?;
            Ok(Response::new(pb::ListDevicesResponse {
                devices: items.iter().map(device_message).collect(),
                next_page_token: next.unwrap_or_default(),
            }))
        }
        .instrument(span)
        .await
    }

    async fn set_status(
        &self,
        request: Request<pb::SetDeviceStatusRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let span = tracing::info_span!("SetDeviceStatus", device = %request.get_ref().id);
        async move {
            let caller = self.state.auth.caller(&request).await?;
            caller.require(&[Role::Admin], "SetStatus")?;
            let req = request.into_inner();
            DeviceId::parse(&req.id).map_err(invalid_name)?;
            if req.id == crate::bootstrap::SERVER_DEVICE {
                return Err(Status::invalid_argument(format!(
                    "{} is the CA's own API identity; it cannot be suspended or decommissioned",
                    req.id
                )));
            }
            let status = status_from(req.status)?
                .ok_or_else(|| Status::invalid_argument("status is missing"))?;
            let out = self
                .state
                .store
                .write(WriteOp::SetDeviceStatus {
                    id: req.id.clone(),
                    status,
                    admin_profiles: operators(&self.state.profiles, false).admin_profiles,
                    at: self.state.authority.clock().now(),
                    actor: caller.actor(),
                })
                .await
                .map_err(store_status)?;
            // The CRL publisher hears of the certificates from the store's status feed.
            if let WriteOutput::StatusChanged(changed) = out {
                tracing::info!(
                    status = status.as_str(),
                    certificates = changed.len(),
                    "device status set"
                );
            }
            let d = self
                .state
                .store
                .device(&req.id)
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::not_found(format!("device {} is not registered", req.id)))?;
            Ok(Response::new(device_message(&d)))
        }
        .instrument(span)
        .await
    }

    async fn readmit(
        &self,
        request: Request<pb::ReadmitDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let span = tracing::info_span!("ReadmitDevice", device = %request.get_ref().id);
        async move {
            let caller = self.state.auth.caller(&request).await?;
            caller.require(&[Role::Admin], "Readmit")?;
            let id = request.into_inner().id;
            DeviceId::parse(&id).map_err(invalid_name)?;
            if id == crate::bootstrap::SERVER_DEVICE {
                return Err(Status::invalid_argument(format!(
                    "{id} is the CA's own API identity; it is never decommissioned or re-admitted"
                )));
            }
            self.state
                .store
                .write(WriteOp::ReadmitDevice {
                    id: id.clone(),
                    at: self.state.authority.clock().now(),
                    actor: caller.actor(),
                })
                .await
                .map_err(store_status)?;
            tracing::info!("device re-admitted");
            let d = self
                .state
                .store
                .device(&id)
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::not_found(format!("device {id} is not registered")))?;
            Ok(Response::new(device_message(&d)))
        }
        .instrument(span)
        .await
    }
}
