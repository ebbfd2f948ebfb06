//! Handlebars templates, loaded from `templates/` at start and on reload.
//!
//! Escaping in handlebars is a property of the registry, so there are separate registries:
//! one that HTML-escapes (email HTML parts and web pages) and one that does not (subjects
//! and text parts). All run in strict mode, so a misspelt variable is an error at `check`
//! time instead of an empty gap in 2,000 inboxes.
//!
//! Layout on disk:
//! * `templates/email/<name>.subject.hbs`, `<name>.txt.hbs`, `<name>.html.hbs`
//! * `templates/email/partials/<partial>.txt.hbs` and `<partial>.html.hbs`
//! * `templates/web/<page>.html.hbs` and `templates/web/partials/<partial>.html.hbs`

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use handlebars::Handlebars;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{path}: {problem}")]
    Load { path: String, problem: String },
    #[error("template {name:?} is missing its {part} part ({path})")]
    Missing {
        name: String,
        part: &'static str,
        path: String,
    },
    #[error("template {name}: {problem}")]
    Render { name: String, problem: String },
    #[error("{subject}: {problem}")]
    Preflight { subject: String, problem: String },
    #[error("the subject rendered from template {0:?} contains a line break")]
    SubjectLineBreak(String),
}

/// The three parts of an email, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Email templates: a plain registry for subject and text, an escaping one for HTML.
#[derive(Debug)]
pub struct EmailTemplates {
    plain: Handlebars<'static>,
    html: Handlebars<'static>,
    names: BTreeSet<String>,
}

impl EmailTemplates {
    pub fn load(root: &Path) -> Result<Self, TemplateError> {
        let dir = root.join("email");
        let mut plain = strict(false);
        let mut html = strict(true);
        let mut names = BTreeSet::new();
        for (file, stem) in hbs_files(&dir)? {
            if let Some(name) = stem.strip_suffix(".subject") {
                names.insert(name.to_owned());
                register(&mut plain, &stem, &file)?;
            } else if stem.ends_with(".txt") {
                register(&mut plain, &stem, &file)?;
            } else if stem.ends_with(".html") {
                register(&mut html, &stem, &file)?;
            }
        }
        for (file, stem) in hbs_files(&dir.join("partials"))? {
            if let Some(partial) = stem.strip_suffix(".txt") {
                register_partial(&mut plain, partial, &file)?;
            } else if let Some(partial) = stem.strip_suffix(".html") {
                register_partial(&mut html, partial, &file)?;
            }
        }
        for name in &names {
            for (part, registry) in [("txt", &plain), ("html", &html)] {
                if !registry.has_template(&format!("{name}.{part}")) {
                    return Err(TemplateError::Missing {
                        name: name.clone(),
                        part: if part == "txt" { "text" } else { "HTML" },
                        path: dir.join(format!("{name}.{part}.hbs")).display().to_string(),
                    });
                }
            }
        }
        Ok(Self { plain, html, names })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Renders the subject, text and HTML of `name` from one context. The context is
    /// handed over as it is: given a `Serialize`, handlebars copies the data into a new
    /// JSON value for each of the three, and with an announcement's text in it those
    /// copies were a measurable part of composing each message.
    pub fn render(
        &self,
        name: &str,
        data: serde_json::Value,
    ) -> Result<RenderedEmail, TemplateError> {
        let err = |e: handlebars::RenderError| TemplateError::Render {
            name: name.to_owned(),
            problem: e.to_string(),
        };
        let context = handlebars::Context::from(data);
        let subject = self
            .plain
            .render_with_context(&format!("{name}.subject"), &context)
            .map_err(err)?;
        // A subject spread over lines in the template file is one line to the reader; a
        // line break that came from *data* is refused instead of folded away silently.
        let subject = subject.trim().to_owned();
        if subject.contains(['\r', '\n']) {
            return Err(TemplateError::SubjectLineBreak(name.to_owned()));
        }
        Ok(RenderedEmail {
            subject,
            text: self
                .plain
                .render_with_context(&format!("{name}.txt"), &context)
                .map_err(err)?,
            html: self
                .html
                .render_with_context(&format!("{name}.html"), &context)
                .map_err(err)?,
        })
    }
}

/// Web pages: one escaping registry.
#[derive(Debug)]
pub struct WebTemplates {
    html: Handlebars<'static>,
    pages: Vec<String>,
}

impl WebTemplates {
    pub fn load(root: &Path) -> Result<Self, TemplateError> {
        let dir = root.join("web");
        let mut html = strict(true);
        let mut pages = Vec::new();
        for (file, stem) in hbs_files(&dir)? {
            if let Some(page) = stem.strip_suffix(".html") {
                register(&mut html, page, &file)?;
                pages.push(page.to_owned());
            }
        }
        for (file, stem) in hbs_files(&dir.join("partials"))? {
            if let Some(partial) = stem.strip_suffix(".html") {
                register_partial(&mut html, partial, &file)?;
            }
        }
        Ok(Self { html, pages })
    }

    pub fn render<T: Serialize>(&self, page: &str, data: &T) -> Result<String, TemplateError> {
        self.html
            .render(page, data)
            .map_err(|e| TemplateError::Render {
                name: format!("web/{page}"),
                problem: e.to_string(),
            })
    }

    pub fn pages(&self) -> &[String] {
        &self.pages
    }
}

fn strict(escape_html: bool) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.set_dev_mode(false);
    if !escape_html {
        hb.register_escape_fn(handlebars::no_escape);
    }
    hb
}

/// `*.hbs` files directly in `dir`, with their names minus `.hbs`, sorted.
fn hbs_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, TemplateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TemplateError::Load {
                path: dir.display().to_string(),
                problem: e.to_string(),
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TemplateError::Load {
            path: dir.display().to_string(),
            problem: e.to_string(),
        })?;
        let path = entry.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = file_name.strip_suffix(".hbs")
            && path.is_file()
        {
            files.push((path.clone(), stem.to_owned()));
        }
    }
    files.sort();
    Ok(files)
}

fn read(file: &Path) -> Result<String, TemplateError> {
    std::fs::read_to_string(file).map_err(|e| TemplateError::Load {
        path: file.display().to_string(),
        problem: e.to_string(),
    })
}

fn register(hb: &mut Handlebars<'static>, name: &str, file: &Path) -> Result<(), TemplateError> {
    hb.register_template_string(name, read(file)?)
        .map_err(|e| TemplateError::Load {
            path: file.display().to_string(),
            problem: e.to_string(),
        })
}

fn register_partial(
    hb: &mut Handlebars<'static>,
    name: &str,
    file: &Path,
) -> Result<(), TemplateError> {
    hb.register_partial(name, read(file)?)
        .map_err(|e| TemplateError::Load {
            path: file.display().to_string(),
            problem: e.to_string(),
        })
}
