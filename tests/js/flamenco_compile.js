// Runs a Flamenco v3 job-type script in Node with a small stand-in for the manager's globals
// (`author`, `path`, `print`), as the manager's JavaScript runtime would, and prints the compiled job.
//
//   node tests/js/flamenco_compile.js farm/flamenco/da3_reconstruct.js '{"settings": {...}}'
//
// Checks what the manager checks when it stores a job: task names unique, every dependency a task
// of the same job, no dependency cycle, commands with a known type and their parameters of the
// right types ("exec": exe a string, args an array of strings). Prints JSON on stdout:
// {"jobType": JOB_TYPE, "tasks": [{"name", "type", "commands": [{"name", "parameters"}], "dependencies": [names]}]}.
// A thrown error (compileJob refusing the job) prints {"error": "..."} and exits 1.
"use strict";
const fs = require("fs");
const vm = require("vm");
const nodePath = require("path").posix;

const [scriptPath, jobJson] = process.argv.slice(2);
const submitted = JSON.parse(jobJson);

class Task {
    constructor(name, type) {
        if (typeof name !== "string" || !name) throw new Error(`author.Task: a task needs a name, got ${name}`);
        if (typeof type !== "string" || !type) throw new Error(`author.Task(${name}): a task needs a type`);
        this.name = name; this.type = type; this.commands = []; this.dependencies = [];
    }
    addCommand(command) {
        if (!(command instanceof Command)) throw new Error(`task ${this.name}: addCommand takes an author.Command`);
        this.commands.push(command);
    }
    addDependency(task) {
        if (!(task instanceof Task)) throw new Error(`task ${this.name}: addDependency takes an author.Task`);
        this.dependencies.push(task);
    }
}

const COMMAND_CHECKS = {
    exec: (p) => typeof p.exe === "string" && p.exe.length > 0 && Array.isArray(p.args) && p.args.every((a) => typeof a === "string"),
    echo: (p) => typeof p.message === "string",
    sleep: (p) => Number.isInteger(p.duration_in_seconds),
};

class Command {
    constructor(name, parameters) {
        const check = COMMAND_CHECKS[name];
        if (!check) throw new Error(`author.Command: unknown command type ${name}`);
        if (!check(parameters || {})) throw new Error(`author.Command(${name}): bad parameters ${JSON.stringify(parameters)}`);
        this.name = name; this.parameters = parameters;
    }
}

const job = {
    settings: submitted.settings || {},
    metadata: submitted.metadata || {},
    name: submitted.name || "job",
    tasks: [],
    addTask(task) {
        if (!(task instanceof Task)) throw new Error("job.addTask takes an author.Task");
        this.tasks.push(task);
    },
};

// Flamenco's `path` module: POSIX-style join/dirname/basename/stem
const path = {
    join: (...parts) => nodePath.join(...parts),
    dirname: (p) => nodePath.dirname(p),
    basename: (p) => nodePath.basename(p),
    stem: (p) => nodePath.basename(p, nodePath.extname(p)),
};

const context = vm.createContext({
    author: { Task: (name, type) => new Task(name, type), Command: (name, params) => new Command(name, params) },
    path,
    print: (...args) => process.stderr.write(args.map(String).join(" ") + "\n"),
});

try {
    vm.runInContext(fs.readFileSync(scriptPath, "utf8") + "\n;this.JOB_TYPE = JOB_TYPE;", context, { filename: scriptPath });
    // defaults of settings the job leaves out, as the manager fills them
    for (const setting of context.JOB_TYPE.settings) {
        if (!(setting.key in job.settings) && "default" in setting) job.settings[setting.key] = setting.default;
        if (setting.required && !(setting.key in job.settings)) throw new Error(`setting ${setting.key} is required`);
    }
    context.compileJob(job);
    const names = new Set();
    for (const task of job.tasks) {
        if (names.has(task.name)) throw new Error(`two tasks are named ${task.name}`);
        names.add(task.name);
    }
    for (const task of job.tasks) {
        for (const dep of task.dependencies) {
            if (!job.tasks.includes(dep)) throw new Error(`task ${task.name} depends on ${dep.name}, which is not in the job`);
        }
    }
    const state = new Map();  // depth-first search for a cycle
    const visit = (task) => {
        if (state.get(task) === "done") return;
        if (state.get(task) === "open") throw new Error(`dependency cycle through ${task.name}`);
        state.set(task, "open");
        task.dependencies.forEach(visit);
        state.set(task, "done");
    };
    job.tasks.forEach(visit);
    const out = {
        jobType: context.JOB_TYPE,
        tasks: job.tasks.map((t) => ({
            name: t.name, type: t.type,
            commands: t.commands.map((c) => ({ name: c.name, parameters: c.parameters })),
            dependencies: t.dependencies.map((d) => d.name),
        })),
    };
    process.stdout.write(JSON.stringify(out) + "\n");
} catch (err) {
    process.stdout.write(JSON.stringify({ error: String(err && err.message ? err.message : err) }) + "\n");
    process.exit(1);
}
