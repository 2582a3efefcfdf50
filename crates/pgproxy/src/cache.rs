//! Classifications of recent statement shapes, so a statement that differs
//! from an earlier one only in its numbers is not parsed again (see
//! [`stepgate_sql::shape`]).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use stepgate_sql::{Classifier, PreparedStatements, SqlError, Statement, shape};

/// Maximum number of shapes kept. When full, the cache starts empty again,
/// which costs one parse per shape in use.
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub(crate) struct StatementCache {
    entries: Mutex<HashMap<String, Arc<Vec<Statement>>>>,
}

impl StatementCache {
    /// Classifies `sql` like [`Classifier::classify_in_session`], reusing
    /// the result for text of the same shape.
    pub(crate) fn classify(
        &self,
        classifier: &Classifier,
        sql: &str,
        session: &dyn PreparedStatements,
    ) -> Result<Vec<Statement>, SqlError> {
        let key = shape::cache_key(sql);
        if let Some(key) = &key
            && let Some(hit) = self.entries.lock().get(key)
        {
            return Ok(hit.as_ref().clone());
        }
        let statements = classifier.classify_in_session(sql, session)?;
        if let Some(key) = key
            && shape::is_cacheable(&statements)
        {
            let mut entries = self.entries.lock();
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, Arc::new(statements.clone()));
        }
        Ok(statements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_shape_is_classified_once() {
        let cache = StatementCache::default();
        let classifier = Classifier::default();
        let session = stepgate_sql::NoPreparedStatements;
        let first = cache
            .classify(&classifier, "SELECT * FROM orders WHERE id = 1", &session)
            .unwrap();
        let second = cache
            .classify(&classifier, "SELECT * FROM orders WHERE id = 2", &session)
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(cache.entries.lock().len(), 1);

        cache
            .classify(&classifier, "FETCH 5 FROM c", &session)
            .unwrap();
        assert_eq!(cache.entries.lock().len(), 1);
    }

    #[test]
    fn errors_are_not_cached() {
        let cache = StatementCache::default();
        let classifier = Classifier::default();
        assert!(
            cache
                .classify(
                    &classifier,
                    "SELECT FROM WHERE 1",
                    &stepgate_sql::NoPreparedStatements
                )
                .is_err()
        );
        assert!(cache.entries.lock().is_empty());
    }
}
