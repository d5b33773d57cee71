//! Why a message is a dead letter: one list of reasons, from which the [`Reject`] enum,
//! [`Reject::ALL`] and [`Reject::label`] are generated, so that no reason can miss its label.
//! The labels are Prometheus label values that dashboards and alert rules name: never change
//! one.

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $label:literal,)+) => {
        /// Why a message is a dead letter. [`Reject::label`] is the bounded metric label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reject {
            $($(#[$doc])* $variant,)+
        }

        impl Reject {
            /// Every reason, in the order of the list.
            pub const ALL: [Reject; [$(Reject::$variant),+].len()] = [$(Reject::$variant),+];

            pub fn label(self) -> &'static str {
                match self {
                    $(Reject::$variant => $label,)+
                }
            }
        }
    };
}

reasons! {
    Tombstone => "tombstone",
    Empty => "empty",
    Oversized => "oversized",
    NotUtf8 => "not_utf8",
    ByteOrderMark => "byte_order_mark",
    InvalidJson => "invalid_json",
    NotObject => "not_object",
    MissingField => "missing_field",
    EmptyField => "empty_field",
    FieldTooLong => "field_too_long",
    WrongType => "wrong_type",
    DuplicateKey => "duplicate_key",
    InvalidId => "invalid_id",
    InvalidTimestamp => "invalid_timestamp",
    TimestampOutOfRange => "timestamp_out_of_range",
    NulCharacter => "nul_character",
    LoneSurrogate => "lone_surrogate",
    NumberOutOfRange => "number_out_of_range",
    TooDeep => "too_deep",
    /// Passed validation, but PostgreSQL refused the row (found by bisecting a failed COPY).
    PostgresRejected => "postgres_rejected",
}

#[cfg(test)]
#[path = "reason_tests.rs"]
mod tests;
