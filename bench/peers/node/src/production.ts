// Imported first by main.ts: Express reads NODE_ENV when an app is created.
process.env.NODE_ENV = 'production';
