//! The AST walk of `engine check`: every `event.…` / `delivery.…` path a script reads, through
//! simple aliases, `?.`, loops and the `okta` stdlib helpers, and every target picked by
//! position (`event.target[1]`); and the check of those paths against the shape of the samples
//! (with "did you mean").
//!
//! Rhai property chains are right-nested: `event.target[0].alternateId` is
//! `Dot(event, Index(target, Dot(0, alternateId)))`. The operator of a `Dot`/`Index` node sits
//! between its `lhs` and the first element of its `rhs`; [`Walker::chain`] flattens that.

use rhai::{AST, ASTFlags, Expr, FnCallExpr, INT, Position, Stmt, StmtBlock};

use crate::authoring::tokens::{Shape, field_path};
pub use crate::script::{edit_distance, nearest};

/// The variables a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Event,
    Delivery,
}

impl Root {
    pub fn name(self) -> &'static str {
        match self {
            Root::Event => "event",
            Root::Delivery => "delivery",
        }
    }
}

/// The fields of `delivery` (see `script::delivery_map`).
pub const DELIVERY_FIELDS: &[&str] = &["id", "time", "hook", "source"];
/// Properties Rhai defines on arrays (and strings): reading them is not a field access.
const BUILTIN_PROPERTIES: &[&str] = &["len", "is_empty"];
/// The stdlib module whose helpers return parts of the event.
const OKTA_MODULE: &str = "okta";
/// `okta::…` helpers returning one target item, and the one returning the target array.
const OKTA_TARGET_ITEM: &[&str] = &["target", "target_user"];
const OKTA_TARGET_LIST: &[&str] = &["targets"];
/// Nesting followed by the walk: deeper code is left unchecked rather than risk the stack.
const MAX_WALK_DEPTH: usize = 200;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// `.name` or `["name"]`; `pos` is where the name starts (NONE for synthetic steps).
    Field {
        name: String,
        pos: Position,
        quoted: bool,
    },
    /// `[i]` with a literal integer or `for x in …` (an array item), or `[expr]`.
    Index { dynamic: bool },
}

/// A path a script reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRead {
    pub root: Root,
    pub segs: Vec<Seg>,
    /// When read through a variable: its name, how many leading `segs` it stands for, and
    /// where it was declared.
    pub alias: Option<(String, usize, Position)>,
}

/// A target picked by its position: `event.target[1]`, or `t[1]` where `t` is `event.target`.
/// Okta does not keep targets in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionalTarget {
    pub index: INT,
    /// The array as written: `event.target`, or the variable holding it.
    pub written: String,
    /// Where the chain starts (`event` or the variable) and where the index is.
    pub start: Position,
    pub index_pos: Position,
}

/// What the walk of a script found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    pub reads: Vec<PathRead>,
    pub positional: Vec<PositionalTarget>,
    /// Whether the script imports the `okta` module (at its top level).
    pub imports_okta: bool,
    /// The `okta::` action functions it calls, as written (`okta::suspend_user`), with where
    /// the function's name is (rhai's position of a namespaced call).
    pub okta_actions: Vec<(String, Position)>,
    /// `http_post("name", …)`, `http_request("name", …)`, `http_get("name", …)` calls with a
    /// literal endpoint name: (function, name, where the name is).
    pub endpoint_calls: Vec<(String, String, Position)>,
    /// `schedule(#{ run: "name", … })` with a literal function name: (name, where). The place
    /// is the literal's, or the map's when the optimizer folded a constant map.
    pub schedule_calls: Vec<(String, Position)>,
    /// Literal durations: schedule's `after`/`"in"`, the TTL of `state::set`/`state::incr`,
    /// `time::add`'s: (what, text, where), placed like [`Walk::schedule_calls`].
    pub durations: Vec<(String, String, Position)>,
}

/// The host functions whose first argument names an `[endpoint.NAME]`.
pub const ENDPOINT_FUNCTIONS: &[&str] = &["http_post", "http_request", "http_get"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Unknown,
    Path {
        root: Root,
        segs: Vec<Seg>,
        /// The variable (name, declaration) the value came from, for messages.
        alias: Option<(String, usize, Position)>,
    },
}

struct Binding {
    name: String,
    val: Val,
    depth: usize,
    pos: Position,
}

/// Collects the path reads of a script.
struct Walker {
    scope: Vec<Binding>,
    depth: usize,
    okta: Vec<String>,
    reads: Vec<PathRead>,
    positional: Vec<PositionalTarget>,
    okta_actions: Vec<(String, Position)>,
    endpoint_calls: Vec<(String, String, Position)>,
    schedule_calls: Vec<(String, Position)>,
    durations: Vec<(String, String, Position)>,
    /// Nesting of the recursion, bounded by [`MAX_WALK_DEPTH`].
    nesting: usize,
}

/// Every `event`/`delivery` path `ast` reads (top level and functions), in walk order.
pub fn path_reads(ast: &AST) -> Vec<PathRead> {
    walk(ast).reads
}

/// The paths `ast` reads and the targets it picks by position (top level and functions), in
/// walk order.
pub fn walk(ast: &AST) -> Walk {
    let mut w = Walker {
        scope: Vec::new(),
        depth: 0,
        okta: Vec::new(),
        reads: Vec::new(),
        positional: Vec::new(),
        okta_actions: Vec::new(),
        endpoint_calls: Vec::new(),
        schedule_calls: Vec::new(),
        durations: Vec::new(),
        nesting: 0,
    };
    w.bind_roots(&["event", "delivery"]);
    // Imports are top-level statements: see them before the functions that use the alias.
    for s in ast.statements() {
        if let Stmt::Import(x, _) = s
            && let Expr::StringConstant(name, _) = &x.0
            && name.strip_suffix(".rhai").unwrap_or(name) == OKTA_MODULE
        {
            w.okta.push(x.1.name.to_string());
        }
    }
    let imports_okta = !w.okta.is_empty();
    for s in ast.statements() {
        w.stmt(s);
    }
    // Function bodies: rhai does not export the type holding them, so take each function
    // alone (a copy of the AST with only it) and collect its top statements through `walk`.
    let functions: Vec<(String, Vec<String>)> = ast
        .iter_functions()
        .map(|f| {
            (
                f.name.to_string(),
                f.params.iter().map(|p| p.to_string()).collect(),
            )
        })
        .collect();
    for (name, params) in functions {
        let mut one = ast.clone();
        one.clear_statements();
        one.retain_functions(|_, _, n, arity| n == name && arity == params.len());
        let mut body: Vec<Stmt> = Vec::new();
        one.walk(&mut |path: &[rhai::ASTNode]| {
            if let [rhai::ASTNode::Stmt(s)] = path {
                body.push((*s).clone());
            }
            true
        });
        w.scope.clear();
        w.depth = 0;
        // A parameter called `event` (or `delivery`) is taken to be the event.
        let params: Vec<&str> = params.iter().map(String::as_str).collect();
        w.bind_roots(&params);
        w.depth = 1;
        for s in &body {
            w.stmt(s);
        }
    }
    Walk {
        reads: w.reads,
        positional: w.positional,
        imports_okta,
        okta_actions: w.okta_actions,
        endpoint_calls: w.endpoint_calls,
        schedule_calls: w.schedule_calls,
        durations: w.durations,
    }
}

impl Walker {
    fn bind_roots(&mut self, names: &[&str]) {
        for n in names {
            let val = match *n {
                "event" => Val::Path {
                    root: Root::Event,
                    segs: Vec::new(),
                    alias: None,
                },
                "delivery" => Val::Path {
                    root: Root::Delivery,
                    segs: Vec::new(),
                    alias: None,
                },
                _ => Val::Unknown,
            };
            self.bind(n, val, Position::NONE);
        }
    }

    fn bind(&mut self, name: &str, val: Val, pos: Position) {
        // A variable holding a path remembers its name for messages.
        let val = match val {
            Val::Path { root, segs, .. } if !segs.is_empty() => Val::Path {
                alias: Some((name.to_string(), segs.len(), pos)),
                root,
                segs,
            },
            v => v,
        };
        self.scope.push(Binding {
            name: name.to_string(),
            val,
            depth: self.depth,
            pos,
        });
    }

    fn lookup(&self, name: &str) -> Val {
        self.scope
            .iter()
            .rev()
            .find(|b| b.name == name)
            .map_or(Val::Unknown, |b| b.val.clone())
    }

    /// `name = val`: the variable holds `val` from now on if assigned at the depth it was
    /// declared at; assigned in a nested block (a branch, a loop) it may hold either: unknown.
    fn assign(&mut self, name: &str, val: Val) {
        let depth = self.depth;
        if let Some(i) = self.scope.iter().rposition(|b| b.name == name) {
            let (d, pos) = (self.scope[i].depth, self.scope[i].pos);
            let val = if d == depth { val } else { Val::Unknown };
            let val = match val {
                Val::Path { root, segs, .. } if !segs.is_empty() => Val::Path {
                    alias: Some((name.to_string(), segs.len(), pos)),
                    root,
                    segs,
                },
                v => v,
            };
            self.scope[i].val = val;
        }
    }

    fn block(&mut self, b: &StmtBlock) {
        let mark = self.scope.len();
        self.depth += 1;
        for s in b.statements() {
            self.stmt(s);
        }
        self.depth -= 1;
        self.scope.truncate(mark);
    }

    fn stmt(&mut self, s: &Stmt) {
        if self.nesting >= MAX_WALK_DEPTH {
            return;
        }
        self.nesting += 1;
        self.stmt_inner(s);
        self.nesting -= 1;
    }

    fn stmt_inner(&mut self, s: &Stmt) {
        match s {
            Stmt::Var(x, _, _) => {
                let v = self.expr(&x.1);
                self.bind(&x.0.name, v, x.0.pos);
            }
            Stmt::Assignment(x) => {
                let (op, bin) = &**x;
                let v = self.expr(&bin.rhs);
                match &bin.lhs {
                    Expr::Variable(var, _, _) => {
                        let v = if op.is_op_assignment() {
                            Val::Unknown
                        } else {
                            v
                        };
                        self.assign(&var.1, v);
                    }
                    lhs => {
                        // `u.x = …` changes a copy: its fields are no longer known.
                        if let Some(root) = chain_root_var(lhs) {
                            self.assign(&root, Val::Unknown);
                        }
                        self.walk_target(lhs);
                    }
                }
            }
            Stmt::If(x, _) | Stmt::While(x, _) | Stmt::Do(x, _, _) => {
                self.expr(&x.expr);
                self.block(&x.body);
                self.block(&x.branch);
            }
            Stmt::Switch(x, _) => {
                let (e, cases) = &**x;
                self.expr(e);
                for b in cases.expressions.iter() {
                    self.expr(&b.lhs);
                    self.expr(&b.rhs);
                }
            }
            Stmt::For(x, _) => {
                let (var, counter, fc) = &**x;
                let iter = self.expr(&fc.expr);
                let item = match iter {
                    Val::Path { root, mut segs, .. } => {
                        segs.push(Seg::Index { dynamic: false });
                        Val::Path {
                            root,
                            segs,
                            alias: None,
                        }
                    }
                    Val::Unknown => Val::Unknown,
                };
                let mark = self.scope.len();
                self.depth += 1;
                self.bind(&var.name, item, var.pos);
                if let Some(c) = counter {
                    self.bind(&c.name, Val::Unknown, c.pos);
                }
                for s in fc.body.statements() {
                    self.stmt(s);
                }
                self.depth -= 1;
                self.scope.truncate(mark);
            }
            Stmt::FnCall(fc, pos) => {
                self.call(fc, *pos);
            }
            Stmt::Block(b) => self.block(b),
            Stmt::TryCatch(x, _) => {
                self.block(&x.body);
                let mark = self.scope.len();
                self.depth += 1;
                if let Expr::Variable(v, _, pos) = &x.expr {
                    self.bind(&v.1, Val::Unknown, *pos);
                }
                for s in x.branch.statements() {
                    self.stmt(s);
                }
                self.depth -= 1;
                self.scope.truncate(mark);
            }
            Stmt::Expr(e) => {
                self.expr(e);
            }
            Stmt::BreakLoop(Some(e), _, _) | Stmt::Return(Some(e), _, _) => {
                self.expr(e);
            }
            Stmt::Import(x, _) => {
                self.expr(&x.0);
                // A later `import "okta" as okta` in a block is already known from the top
                // level; other modules shadow the alias.
                if !matches!(&x.0, Expr::StringConstant(n, _) if n.strip_suffix(".rhai").unwrap_or(n) == OKTA_MODULE)
                {
                    self.okta.retain(|a| *a != x.1.name);
                }
            }
            _ => {}
        }
    }

    fn expr(&mut self, e: &Expr) -> Val {
        if self.nesting >= MAX_WALK_DEPTH {
            return Val::Unknown;
        }
        self.nesting += 1;
        let v = self.expr_inner(e);
        self.nesting -= 1;
        v
    }

    fn expr_inner(&mut self, e: &Expr) -> Val {
        match e {
            Expr::Variable(x, _, _) => {
                if x.2.is_empty() {
                    self.lookup(&x.1)
                } else {
                    Val::Unknown
                }
            }
            Expr::Dot(..) | Expr::Index(..) => self.chain(e, true),
            Expr::FnCall(fc, pos) => self.call(fc, *pos),
            Expr::MethodCall(fc, _) => {
                for a in fc.args.iter() {
                    self.expr(a);
                }
                Val::Unknown
            }
            Expr::Stmt(b) => {
                self.block(b);
                Val::Unknown
            }
            Expr::InterpolatedString(xs, _) | Expr::Array(xs, _) => {
                for x in xs.iter() {
                    self.expr(x);
                }
                Val::Unknown
            }
            Expr::Map(m, _) => {
                for (_, x) in m.0.iter() {
                    self.expr(x);
                }
                Val::Unknown
            }
            Expr::And(xs, _) | Expr::Or(xs, _) | Expr::Coalesce(xs, _) => {
                for x in xs.iter() {
                    self.expr(x);
                }
                Val::Unknown
            }
            Expr::Custom(c, _) => {
                for x in c.inputs.iter() {
                    self.expr(x);
                }
                Val::Unknown
            }
            _ => Val::Unknown,
        }
    }

    /// A function call: its arguments are walked; `okta::target(event, …)` and friends return
    /// parts of the event.
    fn call(&mut self, fc: &FnCallExpr, pos: Position) -> Val {
        let args: Vec<Val> = fc.args.iter().map(|a| self.expr(a)).collect();
        if fc.namespace.is_empty()
            && ENDPOINT_FUNCTIONS.contains(&fc.name.as_str())
            && let Some(Expr::StringConstant(name, pos)) = fc.args.first()
        {
            self.endpoint_calls
                .push((fc.name.to_string(), name.to_string(), *pos));
        }
        self.timing_literals(fc, pos);
        if fc.namespace.is_empty() || !self.okta.iter().any(|a| a == fc.namespace.root()) {
            return Val::Unknown;
        }
        if crate::script::OKTA_ACTIONS
            .iter()
            .any(|(n, _)| *n == fc.name.as_str())
        {
            let written = format!("{}::{}", fc.namespace.root(), fc.name);
            self.okta_actions.push((written, pos));
        }
        let is_event = matches!(args.first(), Some(Val::Path { root: Root::Event, segs, .. }) if segs.is_empty());
        if !is_event {
            return Val::Unknown;
        }
        let target = Seg::Field {
            name: "target".to_string(),
            pos: Position::NONE,
            quoted: false,
        };
        let name = fc.name.as_str();
        let segs = if OKTA_TARGET_ITEM.contains(&name) {
            vec![target, Seg::Index { dynamic: false }]
        } else if OKTA_TARGET_LIST.contains(&name) {
            vec![target]
        } else {
            return Val::Unknown;
        };
        Val::Path {
            root: Root::Event,
            segs,
            alias: None,
        }
    }

    /// The literals of `schedule(#{ … })` (its function, its delay) and the duration argument
    /// of `state::set`/`state::incr` (third) and `time::add` (second).
    fn timing_literals(&mut self, fc: &FnCallExpr, pos: Position) {
        let namespace = if fc.namespace.is_empty() {
            ""
        } else {
            fc.namespace.root()
        };
        match (namespace, fc.name.as_str(), fc.args.len()) {
            ("", "schedule", 1) => {
                // A map of constants is folded into one value by the optimizer.
                let fields: Vec<(String, String, Position)> = match &fc.args[0] {
                    Expr::Map(m, _) => {
                        m.0.iter()
                            .filter_map(|(k, x)| match x {
                                Expr::StringConstant(s, p) => {
                                    Some((k.name.to_string(), s.to_string(), *p))
                                }
                                _ => None,
                            })
                            .collect()
                    }
                    Expr::DynamicConstant(v, p) => v
                        .read_lock::<rhai::Map>()
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| {
                                    let s = v.read_lock::<rhai::ImmutableString>()?;
                                    Some((k.to_string(), s.to_string(), *p))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                for (key, text, p) in fields {
                    match key.as_str() {
                        "run" | "call" => self.schedule_calls.push((text, p)),
                        "after" | "in" => {
                            let what = format!("schedule's `{key}`");
                            self.durations.push((what, text, p));
                        }
                        _ => {}
                    }
                }
            }
            ("state", "set" | "incr", 3) | ("time", "add", 2) => {
                if let Some(Expr::StringConstant(text, p)) = fc.args.last() {
                    let what = if namespace == "time" {
                        "time::add's duration".to_string()
                    } else {
                        format!("state::{}'s ttl", fc.name)
                    };
                    let p = if p.is_none() { pos } else { *p };
                    self.durations.push((what, text.to_string(), p));
                }
            }
            _ => {}
        }
    }

    /// The elements of a chain rooted at `e` (a `Dot` or `Index`), in order.
    fn chain(&mut self, e: &Expr, record: bool) -> Val {
        let (Expr::Dot(x, flags, _) | Expr::Index(x, flags, _)) = e else {
            return self.expr(e);
        };
        let root = self.expr(&x.lhs);
        let mut elems: Vec<(bool, &Expr)> = Vec::new();
        let ends = flags.contains(ASTFlags::BREAK);
        flatten(&x.rhs, matches!(e, Expr::Index(..)), ends, &mut elems, 0);

        let (mut base, alias) = match root {
            Val::Path { root, segs, alias } => (Some((root, segs)), alias),
            Val::Unknown => (None, None),
        };
        let mut stopped = base.is_none();
        for (is_index, el) in elems {
            if let (false, true, Expr::IntegerConstant(index, index_pos), Some((Root::Event, segs))) =
                (stopped, is_index, el, &base)
                && let [Seg::Field { name, pos, .. }] = segs.as_slice()
                && name == "target"
                // `okta::targets(…)` stands for `event.target` with no position of its own.
                && !pos.is_none()
            {
                let written = match &alias {
                    Some((var, 1, _)) => var.clone(),
                    _ => "event.target".to_string(),
                };
                self.positional.push(PositionalTarget {
                    index: *index,
                    written,
                    start: x.lhs.position(),
                    index_pos: *index_pos,
                });
            }
            let seg = if is_index {
                match el {
                    Expr::IntegerConstant(..) => Some(Seg::Index { dynamic: false }),
                    Expr::StringConstant(s, pos) => Some(Seg::Field {
                        name: s.to_string(),
                        pos: *pos,
                        quoted: true,
                    }),
                    other => {
                        self.expr(other);
                        Some(Seg::Index { dynamic: true })
                    }
                }
            } else {
                match el {
                    Expr::Property(p, pos) => Some(Seg::Field {
                        name: p.2.to_string(),
                        pos: *pos,
                        quoted: false,
                    }),
                    Expr::MethodCall(fc, _) => {
                        for a in fc.args.iter() {
                            self.expr(a);
                        }
                        None
                    }
                    other => {
                        self.expr(other);
                        None
                    }
                }
            };
            match (seg, &mut base) {
                (Some(seg), Some((_, segs))) if !stopped => segs.push(seg),
                _ => stopped = true,
            }
        }
        let Some((root, segs)) = base else {
            return Val::Unknown;
        };
        if record && segs.len() > alias.as_ref().map_or(0, |a| a.1) {
            // Steps up to the method call (or the end) are read.
            self.reads.push(PathRead {
                root,
                segs: segs.clone(),
                alias: alias.clone(),
            });
        }
        if stopped {
            Val::Unknown
        } else {
            Val::Path {
                root,
                segs,
                alias: None,
            }
        }
    }

    /// The target of an assignment: only the index expressions inside are read.
    fn walk_target(&mut self, e: &Expr) {
        if let Expr::Dot(x, flags, _) | Expr::Index(x, flags, _) = e {
            let mut elems = Vec::new();
            let ends = flags.contains(ASTFlags::BREAK);
            flatten(&x.rhs, matches!(e, Expr::Index(..)), ends, &mut elems, 0);
            for (is_index, el) in elems {
                if is_index || !matches!(el, Expr::Property(..)) {
                    self.expr(el);
                }
            }
        }
    }
}

/// `rhs` of a chain node whose operator is an index (`true`) or a dot: the elements in order.
/// `ends` is the node's `BREAK` flag: the chain stops there and `rhs` is one element (e.g. the
/// index expression of a final `[…]`).
fn flatten<'a>(
    rhs: &'a Expr,
    is_index: bool,
    ends: bool,
    out: &mut Vec<(bool, &'a Expr)>,
    depth: usize,
) {
    if depth > MAX_WALK_DEPTH {
        return;
    }
    match rhs {
        Expr::Dot(x, flags, _) | Expr::Index(x, flags, _) if !ends => {
            out.push((is_index, &x.lhs));
            flatten(
                &x.rhs,
                matches!(rhs, Expr::Index(..)),
                flags.contains(ASTFlags::BREAK),
                out,
                depth + 1,
            );
        }
        other => out.push((is_index, other)),
    }
}

/// The variable a chain starts from (`u` in `u.a[0].b`).
fn chain_root_var(e: &Expr) -> Option<String> {
    match e {
        Expr::Dot(x, _, _) | Expr::Index(x, _, _) => chain_root_var(&x.lhs),
        Expr::Variable(v, _, _) if v.2.is_empty() => Some(v.1.to_string()),
        _ => None,
    }
}

/// What is wrong with a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// A field of a documented (closed) object that neither the docs nor the samples have.
    Unknown,
    /// A field of an open object that no sample has.
    Unseen,
    /// A field read from an array.
    OnArray,
}

/// A problem found at one step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFinding {
    pub problem: PathProblem,
    /// The field's name and where it is.
    pub name: String,
    pub pos: Position,
    pub quoted: bool,
    /// The path up to the object the field was looked up in, as written (`u` or `event.actor`).
    pub parent: String,
    /// The closest known field, if any is close.
    pub suggestion: Option<String>,
    /// The known fields of the parent.
    pub known: Vec<String>,
}

/// Checks `read` against `shape` (the root object's shape); `None` when it is fine or cannot be
/// decided (a value never seen, a dynamic key).
pub fn check_path(read: &PathRead, shape: &Shape) -> Option<PathFinding> {
    let alias_len = read.alias.as_ref().map_or(0, |a| a.1);
    let mut node = shape;
    let mut written = match &read.alias {
        Some((name, _, _)) => name.clone(),
        None => read.root.name().to_string(),
    };
    for (i, seg) in read.segs.iter().enumerate() {
        match seg {
            Seg::Field { name, pos, quoted } => {
                if let Some(child) = node.fields.get(name) {
                    node = child;
                } else {
                    if i < alias_len {
                        // Reported where the alias was defined.
                        return None;
                    }
                    let is_array_only =
                        !node.kinds.is_empty() && node.kinds.iter().all(|k| k.name() == "array");
                    let problem = if node.fields.is_empty() {
                        if is_array_only && !BUILTIN_PROPERTIES.contains(&name.as_str()) {
                            PathProblem::OnArray
                        } else {
                            return None;
                        }
                    } else if node.closed {
                        PathProblem::Unknown
                    } else {
                        PathProblem::Unseen
                    };
                    let known: Vec<String> = node.fields.keys().cloned().collect();
                    return Some(PathFinding {
                        problem,
                        name: name.clone(),
                        pos: *pos,
                        quoted: *quoted,
                        suggestion: nearest(name, &known),
                        parent: written,
                        known,
                    });
                }
                if i >= alias_len {
                    written = if *quoted {
                        format!(
                            "{written}[{}]",
                            serde_json::to_string(name).unwrap_or_default()
                        )
                    } else {
                        field_path(&written, name)
                    };
                }
            }
            Seg::Index { dynamic } => match &node.item {
                Some(item) => {
                    node = item;
                    if i >= alias_len {
                        written.push_str(if *dynamic { "[…]" } else { "[0]" });
                    }
                }
                None => return None,
            },
        }
    }
    None
}

/// The root shape for `root`: the event's shape, or the fixed `delivery` map.
pub fn delivery_shape() -> Shape {
    let mut s = Shape {
        closed: true,
        documented: true,
        ..Shape::default()
    };
    for f in DELIVERY_FIELDS {
        s.fields.insert(
            (*f).to_string(),
            Shape {
                documented: true,
                ..Shape::default()
            },
        );
    }
    s
}

/// Where in `source` the string literal with this text is, at or after `from`: (line, column
/// of its first character inside the quotes). A literal's own position is its opening quote;
/// a folded constant map's is the map's, and the literal is found after it.
pub fn literal_place(source: &str, from: Position, text: &str) -> (Option<usize>, Option<usize>) {
    let (Some(line), Some(col)) = (from.line(), from.position()) else {
        return (None, None);
    };
    let start: usize = source
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum::<usize>()
        + source
            .lines()
            .nth(line - 1)
            .unwrap_or("")
            .char_indices()
            .nth(col - 1)
            .map_or(0, |(i, _)| i);
    let rest = source.get(start..).unwrap_or("");
    let found = ['"', '`']
        .iter()
        .filter_map(|q| rest.find(&format!("{q}{text}{q}")))
        .min();
    match found {
        Some(off) => {
            let at = start + off;
            let before = &source[..at];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 2;
            (Some(line), Some(col))
        }
        None => (Some(line), Some(col)),
    }
}

/// The escapes rhai keeps as written inside a back-tick string (`\n`, `\t`: a backslash and a
/// letter, not a line break or tab): (line, column of the backslash, the escape). Comments,
/// `"…"` strings and characters are skipped; `${…}` inside a back-tick string is code again.
pub fn backtick_escapes(source: &str) -> Vec<(usize, usize, char)> {
    #[derive(PartialEq)]
    enum Mode {
        /// Code, with the `{` opened since it began (a `${` ends at its matching `}`).
        Code(usize),
        Backtick,
    }
    let chars: Vec<char> = source.chars().collect();
    let mut found = Vec::new();
    let mut stack = vec![Mode::Code(0)];
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    // Moves past `n` characters, counting lines.
    let step = |i: &mut usize, line: &mut usize, col: &mut usize, n: usize| {
        for _ in 0..n {
            if chars.get(*i) == Some(&'\n') {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match stack.last_mut() {
            Some(Mode::Backtick) => match (c, next) {
                ('`', Some('`')) => step(&mut i, &mut line, &mut col, 2),
                ('`', _) => {
                    stack.pop();
                    step(&mut i, &mut line, &mut col, 1);
                }
                ('$', Some('{')) => {
                    stack.push(Mode::Code(0));
                    step(&mut i, &mut line, &mut col, 2);
                }
                ('\\', Some(e @ ('n' | 't' | 'r'))) => {
                    found.push((line, col, e));
                    step(&mut i, &mut line, &mut col, 2);
                }
                _ => step(&mut i, &mut line, &mut col, 1),
            },
            Some(Mode::Code(depth)) => match (c, next) {
                ('/', Some('/')) => {
                    while i < chars.len() && chars[i] != '\n' {
                        step(&mut i, &mut line, &mut col, 1);
                    }
                }
                ('/', Some('*')) => {
                    // Block comments nest in rhai.
                    let mut nest = 0usize;
                    while i < chars.len() {
                        match (chars[i], chars.get(i + 1)) {
                            ('/', Some('*')) => {
                                nest += 1;
                                step(&mut i, &mut line, &mut col, 2);
                            }
                            ('*', Some('/')) => {
                                nest -= 1;
                                step(&mut i, &mut line, &mut col, 2);
                                if nest == 0 {
                                    break;
                                }
                            }
                            _ => step(&mut i, &mut line, &mut col, 1),
                        }
                    }
                }
                ('"' | '\'', _) => {
                    step(&mut i, &mut line, &mut col, 1);
                    while i < chars.len() && chars[i] != c {
                        let n = if chars[i] == '\\' { 2 } else { 1 };
                        step(&mut i, &mut line, &mut col, n);
                    }
                    step(&mut i, &mut line, &mut col, 1);
                }
                ('`', _) => {
                    stack.push(Mode::Backtick);
                    step(&mut i, &mut line, &mut col, 1);
                }
                ('{', _) => {
                    *depth += 1;
                    step(&mut i, &mut line, &mut col, 1);
                }
                ('}', _) => {
                    if *depth == 0 && stack.len() > 1 {
                        stack.pop(); // the end of a `${…}`
                    } else if let Some(Mode::Code(d)) = stack.last_mut() {
                        *d = d.saturating_sub(1);
                    }
                    step(&mut i, &mut line, &mut col, 1);
                }
                _ => step(&mut i, &mut line, &mut col, 1),
            },
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtick_escapes_are_found_only_inside_back_tick_strings() {
        let src = concat!(
            "let a = \"x\\n\"; // `not\\n code`\n",
            "let b = `one\\ntwo ${ if a == \"}\" { `in\\t` } else { \"\\n\" } } end`;\n",
            "/* `c\\n` /* nested */ `d\\n` */ let c = 'x';\n",
            "let d = `a``\\r`;",
        );
        assert_eq!(
            backtick_escapes(src),
            [(2, 13, 'n'), (2, 39, 't'), (4, 13, 'r')]
        );
    }

    #[test]
    fn literal_place_finds_the_literal_after_a_folded_map() {
        let src = "let x = 1;\nschedule(#{ after: \"3d\", run: \"remnd\" });\n";
        // The map starts at line 2, column 10.
        let (line, col) = literal_place(src, Position::new(2, 10), "remnd");
        assert_eq!((line, col), (Some(2), Some(32)));
        assert_eq!(
            literal_place(src, Position::new(2, 10), "absent"),
            (Some(2), Some(10))
        );
    }
}
