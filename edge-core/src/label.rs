//! `label_enum!`: the one way to declare an enum whose values are a metric's label values.
//!
//! Counters indexed by such an enum are arrays (`[AtomicU64; Kind::ALL.len()]`, indexed by
//! `kind as usize`), and the exporter walks `ALL` to name each series with `as_str`. Declaring the
//! variant, its position and its label in one line keeps the three from drifting apart, which a
//! hand-written `ALL` and a separate table of names would allow.

/// Declares a fieldless enum of label values: the enum (deriving `Debug`, `Clone`, `Copy`,
/// `PartialEq`, `Eq`, `Hash`, plus whatever attributes are given), `ALL` with every value in
/// declaration order, so that `value as usize` is its index, and `as_str` with each value's label.
///
/// ```text
/// label_enum! {
///     /// Which way bytes went.
///     pub enum Direction {
///         /// From the backend.
///         Rx => "rx",
///         /// To the backend.
///         Tx => "tx",
///     }
/// }
/// ```
#[macro_export]
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order: `value as usize` is its index here.
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];

            /// The value as a label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $label),+
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::label_enum! {
        /// A test enum.
        #[derive(Default)]
        enum Sample {
            /// First.
            #[default]
            First => "first",
            /// Second.
            Second => "second_one",
            /// Third.
            Third => "3rd",
        }
    }

    #[test]
    fn all_is_in_declaration_order_with_labels() {
        let labels: Vec<(usize, &str)> = Sample::ALL.iter().map(|s| (*s as usize, s.as_str())).collect();
        assert_eq!(labels, [(0, "first"), (1, "second_one"), (2, "3rd")]);
        assert_eq!(Sample::default(), Sample::First);
        let counters = [0u8; Sample::ALL.len()];
        assert_eq!(counters.len(), 3);
    }
}
