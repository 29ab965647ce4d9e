//! Pagination of every list: `?page=&limit=` in, `{data, page, limit, total}` out. Services
//! and queries take these types; the HTTP layer only reads them from the query string.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::error::AppError;

/// `?page=&limit=`: page from 1, limit 1–100 (default 20).
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Page number, from 1.
    #[param(minimum = 1, maximum = 4294967295_u64)]
    pub page: Option<u32>,
    /// Rows per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

impl Pagination {
    pub const MAX_LIMIT: u32 = 100;

    pub fn page(&self) -> u32 {
        self.page.unwrap_or(1)
    }
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(20)
    }
    pub fn offset(&self) -> i64 {
        i64::from(self.page() - 1) * i64::from(self.limit())
    }

    pub fn check(self) -> Result<Self, AppError> {
        if self.page == Some(0) {
            return Err(AppError::validation(
                "page must be at least 1",
                json!({"page": ["must be >= 1"]}),
            ));
        }
        if !(1..=Self::MAX_LIMIT).contains(&self.limit()) {
            return Err(AppError::validation(
                "limit must be between 1 and 100",
                json!({"limit": ["must be between 1 and 100"]}),
            ));
        }
        Ok(self)
    }
}

/// A page of results: `{data, page, limit, total}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub page: u32,
    pub limit: u32,
    pub total: i64,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, pagination: Pagination, total: i64) -> Self {
        Self {
            data,
            page: pagination.page(),
            limit: pagination.limit(),
            total,
        }
    }
}
