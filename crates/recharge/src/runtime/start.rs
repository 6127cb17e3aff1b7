//! The whole `main` of each Recharge function: callback-core's start-up (logging, settings,
//! Sentry, AWS clients built once), then the Lambda loop.

use std::sync::Arc;

use callback_core::runtime::start::{
    answered, aws_config, aws_ports, dynamo_store, run, serve, PanicGuard,
};
use lambda_runtime::Error;

use crate::flows::dunning::{DunningPorts, RechargeDunning, DUNNING_FUNCTION};
use crate::flows::settings::{DunningSettings, WebhookSettings};
use crate::flows::webhook::{RechargeWebhook, WEBHOOK_FUNCTION};
use crate::ports::http::{DunningClient, RechargeClient};
use crate::ports::RetryDateAdvisor;

/// `payment3-recharge-webhook-<branch>`.
pub fn run_webhook() -> Result<(), Error> {
    run(|settings| async move {
        let webhook_settings = Arc::new(WebhookSettings::from_env(&settings)?);
        let ports = aws_ports(&aws_config().await);
        let guard = PanicGuard::new(settings.clone(), &ports);
        let webhook = Arc::new(RechargeWebhook::new(settings, webhook_settings, ports));
        // Every answer is logged (`answered`) for the stack's 5xx and rejected-signature alarms.
        serve(WEBHOOK_FUNCTION, guard, move |event, request_id| {
            let webhook = webhook.clone();
            async move {
                let response = webhook.handle(event, &request_id).await;
                Ok(answered(WEBHOOK_FUNCTION, response))
            }
        })
        .await
    })
}

/// `payment3-recharge-dunning-<branch>`: a retryable failure fails the invocation.
pub fn run_dunning() -> Result<(), Error> {
    run(|settings| async move {
        let dunning_settings = Arc::new(DunningSettings::from_env(&settings)?);
        let config = aws_config().await;
        let advisor = match &dunning_settings.dunning_api_base {
            Some(base) => Some(
                Arc::new(DunningClient::new(base, dunning_settings.dunning_timeout)?)
                    as Arc<dyn RetryDateAdvisor>,
            ),
            None => None,
        };
        let recharge = Arc::new(RechargeClient::new(
            &dunning_settings.recharge_api_base,
            dunning_settings.recharge_timeout,
        )?);
        tracing::info!(
            recharge = %dunning_settings.recharge_api_base,
            dunning = dunning_settings.dunning_api_base.as_deref().unwrap_or("(none: built-in schedule)"),
            "recharge dunning starting"
        );
        let ports = DunningPorts {
            ledger: dynamo_store(&config),
            advisor,
            recharge,
        };
        let aws = aws_ports(&config);
        let guard = PanicGuard::new(settings.clone(), &aws);
        let dunning = Arc::new(RechargeDunning::new(settings, dunning_settings, aws, ports));
        serve(DUNNING_FUNCTION, guard, move |event, request_id| {
            let dunning = dunning.clone();
            async move {
                dunning
                    .handle_event(event, &request_id)
                    .await
                    .map_err(Error::from)
            }
        })
        .await
    })
}
