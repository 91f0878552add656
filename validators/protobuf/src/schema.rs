//! `.proto` text compiled at run time with `protox`, so any schema works without generated
//! code: the protobuf model compiles its catalog's schemas with it, and the grpc binding its
//! services.

use std::collections::BTreeMap;

use prost_reflect::{DescriptorPool, FileDescriptor, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

/// `.proto` sources by file name, as imports name them.
struct Sources(BTreeMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The file name a catalog subject is compiled under: the subject itself when it ends in
/// `.proto`, else the subject with `.proto` added (so `import "echo.proto"` finds subject
/// `echo`).
pub fn file_name(subject: &str) -> String {
    if subject.ends_with(".proto") {
        subject.to_owned()
    } else {
        format!("{subject}.proto")
    }
}

/// Compiles `sources` (file name, `.proto` text) into one pool; the well-known
/// `google/protobuf/*.proto` files are available to import. The error names the file and
/// position protox reports.
pub fn compile(sources: &[(String, String)]) -> Result<DescriptorPool, String> {
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources(sources.iter().cloned().collect()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler
        .open_files(sources.iter().map(|(name, _)| name.as_str()))
        .map_err(|error| match error.file() {
            Some(file) => format!("{file}: {error}"),
            None => error.to_string(),
        })?;
    Ok(compiler.descriptor_pool())
}

/// Compiles one schema's text as the file `name`, which may import only the well-known
/// `google/protobuf/*.proto` files.
pub fn compile_file(name: &str, text: &str) -> Result<FileDescriptor, String> {
    let pool = compile(&[(name.to_owned(), text.to_owned())])?;
    pool.get_file_by_name(name)
        .ok_or_else(|| format!("{name}: not compiled"))
}

/// The message `record` names in `file`: its name relative to the file's package
/// (`Request`, `Outer.Inner`) or its full name (`example.Request`).
pub fn find_record(file: &FileDescriptor, record: &str) -> Result<MessageDescriptor, String> {
    let pool = file.parent_pool();
    let package = file.package_name();
    let relative = (!package.is_empty()).then(|| format!("{package}.{record}"));
    relative
        .iter()
        .map(String::as_str)
        .chain([record])
        .filter_map(|name| pool.get_message_by_name(name))
        .find(|message| message.parent_file() == *file)
        .ok_or_else(|| {
            let declared: Vec<_> = file
                .messages()
                .map(|message| message.name().to_owned())
                .collect();
            format!(
                "the schema declares no message `{record}` (it declares {})",
                if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                }
            )
        })
}

/// Where `message` is declared in its file, as Confluent's message indexes count: the index
/// of its top-level message among the file's messages, then the index of each nested
/// message among its parent's.
pub fn message_indexes(message: &MessageDescriptor) -> Vec<i32> {
    let mut indexes = Vec::new();
    let mut current = message.clone();
    loop {
        let parent = current.parent_message();
        let siblings: Vec<MessageDescriptor> = match &parent {
            Some(parent) => parent.child_messages().collect(),
            None => current.parent_file().messages().collect(),
        };
        let index = siblings
            .iter()
            .position(|sibling| sibling.full_name() == current.full_name())
            .unwrap_or_default();
        indexes.push(i32::try_from(index).unwrap_or(i32::MAX));
        match parent {
            Some(parent) => current = parent,
            None => break,
        }
    }
    indexes.reverse();
    indexes
}

/// The message `indexes` names in `file`, as [`message_indexes`] counts.
pub fn message_at(file: &FileDescriptor, indexes: &[i32]) -> Option<MessageDescriptor> {
    let (first, rest) = indexes.split_first()?;
    let mut message = file.messages().nth(usize::try_from(*first).ok()?)?;
    for index in rest {
        let child = message
            .child_messages()
            .nth(usize::try_from(*index).ok()?)?;
        message = child;
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NESTED: &str = r#"
        syntax = "proto3";
        package example;
        message First { string a = 1; }
        message Second {
          message Inner { int32 b = 1; }
          message Other { message Deep { bool c = 1; } }
          Inner inner = 1;
        }
    "#;

    #[test]
    fn records_are_found_by_relative_or_full_name_and_counted_as_confluent_does() {
        let file = compile_file("nested.proto", NESTED).unwrap();
        for (record, full, indexes) in [
            ("First", "example.First", vec![0]),
            ("example.Second", "example.Second", vec![1]),
            ("Second.Inner", "example.Second.Inner", vec![1, 0]),
            (
                "Second.Other.Deep",
                "example.Second.Other.Deep",
                vec![1, 1, 0],
            ),
        ] {
            let message = find_record(&file, record).unwrap();
            assert_eq!(message.full_name(), full);
            assert_eq!(message_indexes(&message), indexes);
            assert_eq!(message_at(&file, &indexes).unwrap(), message);
        }
        let error = find_record(&file, "Third").unwrap_err();
        assert!(error.contains("First, Second"), "{error}");
        // Only messages of the schema's own file count, not those it imports.
        assert!(find_record(&file, "google.protobuf.Timestamp").is_err());
        assert!(message_at(&file, &[2]).is_none());
        assert!(message_at(&file, &[1, 5]).is_none());
        assert!(message_at(&file, &[-1]).is_none());
        assert!(message_at(&file, &[]).is_none());
    }

    #[test]
    fn a_syntax_error_names_the_file() {
        let error = compile(&[(
            file_name("bad"),
            "syntax = \"proto3\"; message {".to_owned(),
        )])
        .unwrap_err();
        assert!(error.contains("bad.proto"), "{error}");
    }

    #[test]
    fn only_well_known_imports_resolve() {
        let timestamp = r#"syntax = "proto3"; import "google/protobuf/timestamp.proto";
            message At { google.protobuf.Timestamp at = 1; }"#;
        assert!(compile_file("at.proto", timestamp).is_ok());
        let other = r#"syntax = "proto3"; import "other.proto"; message At { Other o = 1; }"#;
        let error = compile_file("at.proto", other).unwrap_err();
        assert!(error.contains("other.proto"), "{error}");
    }
}
