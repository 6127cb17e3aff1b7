//! What the salary import reads from the environment, once per container (besides callback-core's
//! [`Settings`](callback_core::Settings), which the error path needs).

use callback_core::runtime::config::var;

/// Table names (defaults `payment3-<name>-<branch>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalarySettings {
    /// `EMPLOYEE_SALARY_TABLE`: `ADD EmpSalary` goes here.
    pub salary_table: String,
    /// `SALARY_IMPORT_LEDGER_TABLE`: the per-file ledger of applied batches.
    pub ledger_table: String,
}

impl SalarySettings {
    pub fn from_env() -> Self {
        let branch = var("BRANCH").unwrap_or_else(|| "dev".to_string());
        let named = |env: &'static str, name: &str| {
            var(env).unwrap_or_else(|| format!("payment3-{name}-{branch}"))
        };
        SalarySettings {
            salary_table: named("EMPLOYEE_SALARY_TABLE", "employee-salary"),
            ledger_table: named("SALARY_IMPORT_LEDGER_TABLE", "salary-import-ledger"),
        }
    }
}

/// Test builds only: the file through which the end-to-end tests ask for a crash part-way
/// (`SALARY_TEST_FAULT_FILE`). A release build never reads the variable.
#[cfg(debug_assertions)]
pub fn test_fault_file() -> Option<String> {
    var("SALARY_TEST_FAULT_FILE")
}
